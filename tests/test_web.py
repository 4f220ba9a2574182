"""newsletter serve over real HTTP: waitress on loopback, the subscriber file on disk, the mails it sends."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from conftest import invoke, write_issue
from smtp_server import Mailbox, SmtpServer, free_port
from web_server import WebServer

from newsletter.signup import RateLimit, prune_pending
from newsletter.subscribers import Subscriber, SubscriberStore
from newsletter.tokens import CONFIRM, make_token, unsubscribe_url, verify_token
from newsletter.workspace import Workspace

BASE = "https://newsletter.praxis.example.org"
CONSENT = "Ja, ich möchte den Newsletter erhalten."
SAME_ANSWER = "Fast geschafft"
Starter = Callable[..., WebServer]


def configure(ws: Workspace, section: str, **settings: object) -> None:
    """Append a [section] to newsletter.toml (TOML values via JSON, which agrees for these types)."""
    lines = [f"{key} = {json.dumps(value, ensure_ascii=False)}" for key, value in settings.items()]
    config = ws.root / "newsletter.toml"
    config.write_text(config.read_text() + f"\n[{section}]\n" + "\n".join(lines) + "\n")
    ws.__dict__.pop("config", None)


@pytest.fixture
def serve(ws: Workspace) -> Iterator[Starter]:
    """Start the app (optionally with [web] settings); every server is stopped after the test."""
    servers: list[WebServer] = []

    def start(**web: object) -> WebServer:
        if web:
            configure(ws, "web", **web)
        server = WebServer(ws).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def web(serve: Starter) -> WebServer:
    return serve()


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox()


@pytest.fixture
def smtp(ws: Workspace, mailbox: Mailbox) -> Iterator[SmtpServer]:
    server = SmtpServer(mailbox).start()
    configure(ws, "smtp", host="127.0.0.1", port=server.port, security="none")
    yield server
    server.stop()


def store(ws: Workspace) -> SubscriberStore:
    return ws.store()


def person(ws: Workspace, email: str) -> Subscriber | None:
    return store(ws).load().get(email)


def add(ws: Workspace, email: str, status: str = "active", name: str = "") -> Subscriber:
    with store(ws).change() as people:
        return people.add(email, name, status=status, source="test")


def file_bytes(ws: Workspace) -> bytes:
    return ws.subscribers_path.read_bytes() if ws.subscribers_path.exists() else b""


def signup(email: str, name: str = "", consent: bool = True, **extra: str) -> str:
    fields = {"email": email, "name": name, "website": "", **extra}
    if consent:
        fields["consent"] = "yes"
    return urlencode(fields)


def outbox_mail(ws: Workspace, kind: str, email: str) -> bytes:
    return (ws.outbox_dir / "web" / kind / f"{email}.eml").read_bytes()


def parse(data: bytes) -> EmailMessage:
    return message_from_bytes(data, policy=policy.default)  # type: ignore[return-value]


def link_in(data: bytes, kind: str) -> str:
    """The one /c/ or /u/ link in a mail's plain-text part."""
    text = parse(data).get_body(("plain",)).get_content()
    links = re.findall(rf"{re.escape(BASE)}/{kind}/\S+", text)
    assert len(links) == 1, text
    return links[0]


def token_of(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[1]


def no_cookie_no_redirect(reply) -> None:
    assert reply.headers.get("Set-Cookie") is None
    assert reply.headers.get("Location") is None


# --- health and what is not there ---------------------------------------------------------------


def test_healthz_answers_ok(web: WebServer) -> None:
    reply = web.get("/healthz")
    assert (reply.status, reply.text) == (200, "ok\n")
    no_cookie_no_redirect(reply)


@pytest.mark.parametrize("path", [
    "/", "/admin", "/u/", "/c/", "/subscribers/subscribers.toml", "/state/secret", "/newsletter.toml",
    "/templates/", "/templates/web/base.html", "/static/", "/u/a/b", "/u/..%2F..%2Fstate%2Fsecret",
    "/%2e%2e/newsletter.toml", "/u/x/../../newsletter.toml",
])
def test_nothing_else_is_exposed(web: WebServer, path: str) -> None:
    reply = web.get(path)
    assert reply.status == 404
    assert "Diese Seite gibt es nicht" in reply.text
    assert "[newsletter]" not in reply.text and "Index of" not in reply.text
    no_cookie_no_redirect(reply)


def test_wrong_method_is_405_with_allow(web: WebServer) -> None:
    reply = web.request("DELETE", "/subscribe")
    assert reply.status == 405
    assert set(reply.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    assert web.request("POST", "/healthz").status == 405


def test_pages_load_nothing_from_elsewhere(web: WebServer) -> None:
    reply = web.get("/subscribe")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in reply.headers["Content-Security-Policy"]
    assert reply.headers["Referrer-Policy"] == "no-referrer"
    assert "<script" not in reply.text
    assert not re.search(r"""(src|href)=["']https?://(?!praxis\.example\.org)""", reply.text)
    assert '<html lang="de">' in reply.text
    assert "Impressum" in reply.text and "Lindenallee 12<br>" in reply.text  # a public page needs one


def test_archive_pages_are_served_and_nothing_beside_them(ws: Workspace, runner, web: WebServer) -> None:
    write_issue(ws, "2026-12-impuls", "Gedanken im Dezember.\n", subject="Impuls im Dezember")
    add(ws, "anna@example.org", name="Anna Vertraulich")
    assert invoke(runner, "send", "issues/2026-12-impuls.md", "--yes").exit_code == 0
    page = web.get("/archiv/2026-12-impuls.html")  # where "Im Browser ansehen" in the mail points
    assert page.status == 200 and "Gedanken im Dezember" in page.text
    assert "Anna" not in page.text and "anna@" not in page.text
    assert page.headers["Cache-Control"].startswith("public")
    assert "img-src https: data:" in page.headers["Content-Security-Policy"]
    index = web.get("/archiv/")
    assert index.status == 200 and "2026-12-impuls.html" in index.text
    feed = web.get("/archiv/feed.xml")
    assert feed.status == 200 and feed.headers["Content-Type"].startswith("application/atom+xml")
    for path in ("/archiv/.archive-files", "/archiv/2027-01-nie.html", "/archiv/..%2F..%2Fnewsletter.toml",
                 "/archiv/../newsletter.toml", "/archiv/%2e%2e/state/secret", "/archiv/sub/index.html",
                 "/archiv/2026-12-impuls.html.bak", "/archive/"):
        reply = web.get(path)
        assert reply.status == 404, path
        assert "Diese Seite gibt es nicht" in reply.text


# --- unsubscribe ----------------------------------------------------------------------------------


def test_opening_the_unsubscribe_link_changes_nothing(ws: Workspace, web: WebServer) -> None:
    anna = add(ws, "anna@example.org")
    before = file_bytes(ws)
    reply = web.get(unsubscribe_url(BASE, ws.secret(), anna.id))
    assert reply.status == 200
    assert "Newsletter abbestellen?" in reply.text
    assert '<form method="post">' in reply.text and "Ja, abbestellen" in reply.text
    no_cookie_no_redirect(reply)
    assert file_bytes(ws) == before


def test_one_click_post_unsubscribes_with_200_twice(ws: Workspace, web: WebServer) -> None:
    anna = add(ws, "anna@example.org")
    ben = add(ws, "ben@example.org")
    url = unsubscribe_url(BASE, ws.secret(), anna.id)
    reply = web.post_form(url, "List-Unsubscribe=One-Click")
    assert reply.status == 200
    assert "Du bist abgemeldet" in reply.text
    no_cookie_no_redirect(reply)
    after_first = person(ws, "anna@example.org")
    assert after_first.status == "unsubscribed" and after_first.unsubscribed_at is not None
    assert person(ws, "ben@example.org").status == "active"
    written = file_bytes(ws)
    again = web.post_form(url, "List-Unsubscribe=One-Click")
    assert again.status == 200 and "Du bist abgemeldet" in again.text
    assert file_bytes(ws) == written  # idempotent: not even a rewrite
    assert ben.id != anna.id


def test_one_click_as_multipart_form_data_unsubscribes(ws: Workspace, web: WebServer) -> None:
    anna = add(ws, "anna@example.org")
    body = ("--b0undary\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\n"
            "One-Click\r\n--b0undary--\r\n")
    reply = web.request("POST", unsubscribe_url(BASE, ws.secret(), anna.id), body,
                        {"Content-Type": "multipart/form-data; boundary=b0undary"})
    assert reply.status == 200
    assert person(ws, "anna@example.org").status == "unsubscribed"


def _broken_tokens(ws: Workspace, subscriber_id: str) -> list[str]:
    good = make_token(ws.secret(), subscriber_id)
    flipped = good[:-1] + ("A" if good[-1] != "A" else "B")
    return [
        flipped,                                                   # tampered signature
        good[:-4],                                                 # truncated
        good.replace(subscriber_id, subscriber_id[:-1] + ("x" if subscriber_id[-1] != "x" else "y"), 1),  # other id
        make_token(ws.secret(), subscriber_id, CONFIRM, issued_at=int(time.time())),  # wrong purpose
        make_token(b"another secret", subscriber_id),              # forged with another key
        "..%2F..%2Fstate%2Fsecret",                                # path traversal
        "..",
        "%00" + good,
        good + "%0d%0aSet-Cookie:%20x=1",
        "x" * 5000,
    ]


def test_broken_unsubscribe_links_change_nothing(ws: Workspace, web: WebServer) -> None:
    anna = add(ws, "anna@example.org")
    before = file_bytes(ws)
    for token in _broken_tokens(ws, anna.id):
        for method in ("GET", "POST"):
            reply = web.request(method, f"/u/{token}", b"List-Unsubscribe=One-Click",
                                {"Content-Type": "application/x-www-form-urlencoded"})
            assert 400 <= reply.status < 500, (token, method, reply.status)
            assert "<h1>" in reply.text, token  # a page for people, not a stack trace
            no_cookie_no_redirect(reply)
    reply = web.get(f"/u/{_broken_tokens(ws, anna.id)[0]}")
    assert "Dieser Link funktioniert leider nicht" in reply.text
    assert "kontakt@praxis.example.org" in reply.text  # another way to leave
    assert file_bytes(ws) == before
    assert web.get("/healthz").status == 200


# --- sign-up and confirmation ---------------------------------------------------------------------


def test_signup_form_shows_consent_text_and_honeypot(web: WebServer) -> None:
    reply = web.get("/subscribe")
    assert reply.status == 200
    assert "Newsletter abonnieren" in reply.text
    assert CONSENT in reply.text
    assert 'name="email"' in reply.text and 'name="consent"' in reply.text
    assert 'name="website"' in reply.text and 'class="hp"' in reply.text
    assert 'name="page"' not in reply.text  # the evidence of where is her own form page, never a field
    no_cookie_no_redirect(reply)


def test_signup_confirm_and_consent_record(ws: Workspace, web: WebServer) -> None:
    reply = web.post_form("/subscribe", signup("Neu@Example.org", "Nora Neu"),
                          {"Referer": "https://praxis.example.org/blog/artikel?utm=mail&email=x@y"})
    assert reply.status == 200, reply.text
    assert SAME_ANSWER in reply.text and "Der Link gilt 7 Tage" in reply.text
    no_cookie_no_redirect(reply)
    pending = person(ws, "neu@example.org")
    assert pending.status == "pending" and pending.name == "Nora Neu" and pending.email == "Neu@example.org"
    assert pending.subscribed_at is not None and pending.confirmed_at is None
    assert (pending.signup_ip, pending.source, pending.consent_version) == ("127.0.0.1", "web", "1")
    assert pending.consent_text == CONSENT
    assert pending.signup_page == "https://praxis.example.org"  # her website: the Referer is one of her pages

    confirm_url = link_in(outbox_mail(ws, "confirm", "Neu@example.org"), "c")
    before = file_bytes(ws)
    ask = web.get(confirm_url)
    assert ask.status == 200 and "Anmeldung bestätigen" in ask.text and "<button" in ask.text
    assert file_bytes(ws) == before

    done = web.post_form(confirm_url, "")
    assert done.status == 200 and "Schön, dass du dabei bist" in done.text
    no_cookie_no_redirect(done)
    active = person(ws, "neu@example.org")
    assert active.status == "active" and active.receives_mail
    assert active.confirmed_at is not None and active.confirmed_at >= active.subscribed_at
    assert active.confirm_ip == "127.0.0.1"
    assert (active.signup_ip, active.consent_text, active.consent_version, active.signup_page) == (
        "127.0.0.1", CONSENT, "1", "https://praxis.example.org")

    welcome = outbox_mail(ws, "welcome", "Neu@example.org")
    assert parse(welcome)["Subject"] == "Willkommen bei „Impuls“"
    leave = link_in(welcome, "u")
    assert verify_token(ws.secret(), token_of(leave)) == active.id
    assert web.post_form(leave, "List-Unsubscribe=One-Click").status == 200
    assert person(ws, "neu@example.org").status == "unsubscribed"


def test_signup_page_is_her_own_page_never_what_the_poster_claims(ws: Workspace, serve: Starter) -> None:
    web = serve()
    forged = "https://evil.example/fake-consent-page"
    web.post_form("/subscribe", signup("a@example.org", page=forged), {"Referer": forged})
    web.post_form("/subscribe", signup("b@example.org", page=forged), {"Referer": "https://praxis.example.org/blog"})
    web.post_form("/subscribe", signup("c@example.org"), {"Origin": "https://www.praxis.example.org"})
    web.post_form("/subscribe", signup("d@example.org"), {"Origin": f"{BASE}"})
    web.post_form("/subscribe", signup("e@example.org"), {"Origin": "https://praxis.example.org.evil.example"})
    web.post_form("/subscribe", signup("f@example.org"))
    pages = {p.email: p.signup_page for p in store(ws).load()}
    assert pages == {"a@example.org": "", "b@example.org": "https://praxis.example.org",
                     "c@example.org": "https://praxis.example.org", "d@example.org": f"{BASE}/subscribe",
                     "e@example.org": "", "f@example.org": ""}
    web.stop()
    web = serve(form_page="https://praxis.example.org/newsletter")
    web.post_form("/subscribe", signup("g@example.org"), {"Referer": "https://praxis.example.org/newsletter?q=1"})
    assert person(ws, "g@example.org").signup_page == "https://praxis.example.org/newsletter"


def test_confirmation_mail_on_the_wire_follows_the_mail_rules(ws: Workspace, smtp: SmtpServer,
                                                              mailbox: Mailbox, serve: Starter) -> None:
    config = ws.root / "newsletter.toml"
    config.write_text(config.read_text().replace('from_name = "Mira Sommerfeld"',
                                                 'from_name = "Praxis Söhnke, Mira Sommerfeld"'))
    web = serve()
    assert web.post_form("/subscribe", signup("anna@example.org", "Anna")).status == 200
    [received] = mailbox.received
    raw, msg = received.data, received.message
    assert received.mail_from == "impuls@praxis.example.org" and received.rcpt_to == ["anna@example.org"]
    assert raw.isascii()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))
    unfolded = re.sub(rb"\r\n[ \t]", b" ", head)
    from_line = next(line for line in unfolded.split(b"\r\n") if line.startswith(b"From:"))
    assert from_line.endswith(b" <impuls@praxis.example.org>") and b"=?utf-8?" in from_line
    assert msg["From"].addresses[0].display_name == "Praxis Söhnke, Mira Sommerfeld"
    assert msg["From"].addresses[0].addr_spec == "impuls@praxis.example.org"
    assert msg["To"] == "anna@example.org"  # the name typed into a form stays out of the mail
    assert msg["Subject"] == "Bitte bestätige deine Anmeldung zu „Impuls“"
    assert re.fullmatch(r"<[0-9a-f]+@praxis\.example\.org>", msg["Message-ID"])
    assert msg["Date"].datetime.tzinfo is not None
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in msg.iter_parts()] == ["text/plain", "text/html"]
    for part in msg.iter_parts():
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
        assert part.get_content_charset() == "utf-8"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    confirm_url = link_in(raw, "c")
    # Only the confirmation link: no advertising, no other link, no tracking.
    assert re.findall(r"https?://\S+", text) == [confirm_url]
    # the button, its Outlook drawing and the link as text below it: all the same one
    assert set(re.findall(r'href="([^"]+)"', html)) == {confirm_url}
    assert "<img" not in html and "Impressum" in text and "Impressum" in html
    assert "Anna" not in text and "Anna" not in html
    assert html.lstrip().lower().startswith("<!doctype html>")


def test_confirmation_links_damaged_or_expired_change_nothing(ws: Workspace, web: WebServer) -> None:
    web.post_form("/subscribe", signup("neu@example.org"))
    pending = person(ws, "neu@example.org")
    good = token_of(link_in(outbox_mail(ws, "confirm", "neu@example.org"), "c"))
    eight_days_ago = int(time.time()) - 8 * 86400
    broken = [
        make_token(ws.secret(), pending.id, CONFIRM, issued_at=eight_days_ago),  # expired
        make_token(ws.secret(), pending.id, CONFIRM, issued_at=int(time.time()) + 86400),  # from the future
        make_token(ws.secret(), pending.id),  # an unsubscribe token is no confirmation
        good[:-1] + ("A" if good[-1] != "A" else "B"),
        good[:-6],
        good.rsplit(".", 2)[0] + f".{int(time.time()) - 3600}." + good.rsplit(".", 1)[1],  # other date, old mac
        "..%2F..%2Fsubscribers%2Fsubscribers.toml",
    ]
    before = file_bytes(ws)
    for token in broken:
        for method in ("GET", "POST"):
            reply = web.request(method, f"/c/{token}", b"", {"Content-Type": "application/x-www-form-urlencoded"})
            assert 400 <= reply.status < 500, (token, method, reply.status)
    reply = web.post_form(f"/c/{broken[0]}", "")
    assert reply.status == 400
    assert "ungültig oder abgelaufen" in reply.text and f'href="{BASE}/subscribe"' in reply.text
    assert file_bytes(ws) == before
    assert person(ws, "neu@example.org").status == "pending"


def test_confirming_twice_is_fine_and_welcomes_once(ws: Workspace, smtp: SmtpServer, mailbox: Mailbox,
                                                     serve: Starter) -> None:
    web = serve()
    web.post_form("/subscribe", signup("neu@example.org"))
    confirm_url = link_in(mailbox.received[0].data, "c")
    first = web.post_form(confirm_url, "")
    confirmed_at = person(ws, "neu@example.org").confirmed_at
    second = web.post_form(confirm_url, "")
    assert first.status == second.status == 200
    assert first.body == second.body
    assert person(ws, "neu@example.org").confirmed_at == confirmed_at
    subjects = [r.message["Subject"] for r in mailbox.received]
    assert subjects == ["Bitte bestätige deine Anmeldung zu „Impuls“", "Willkommen bei „Impuls“"]
    assert "Schön, dass du dabei bist" in web.get(confirm_url).text  # GET after: no button, no change


def test_welcome_mail_has_the_list_headers_of_an_issue(ws: Workspace, smtp: SmtpServer, mailbox: Mailbox,
                                                       serve: Starter) -> None:
    web = serve()
    web.post_form("/subscribe", signup("neu@example.org"))
    confirmation = mailbox.received[0].data
    assert b"List-Unsubscribe" not in confirmation  # not subscribed yet: nothing to leave
    web.post_form(link_in(confirmation, "c"), "")
    raw = mailbox.received[1].data
    head, _, body = raw.partition(b"\r\n\r\n")
    assert raw.isascii() and all(len(line) <= 76 for line in body.split(b"\r\n"))
    leave = unsubscribe_url(BASE, ws.secret(), person(ws, "neu@example.org").id)
    lines = head.split(b"\r\n")
    mailto = f"mailto:impuls@praxis.example.org?subject=Abmelden%20{leave.rsplit('/', 1)[1]}"
    assert f"List-Unsubscribe: <{leave}>, <{mailto}>".encode() in lines
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in lines
    assert b'List-Id: "Impuls" <newsletter.praxis.example.org>' in lines
    assert link_in(raw, "u") == leave


def test_no_welcome_mail_when_switched_off(ws: Workspace, smtp: SmtpServer, mailbox: Mailbox, serve: Starter) -> None:
    web = serve(welcome_mail=False)
    web.post_form("/subscribe", signup("neu@example.org"))
    web.post_form(link_in(mailbox.received[0].data, "c"), "")
    assert person(ws, "neu@example.org").status == "active"
    assert len(mailbox.received) == 1


def test_same_answer_whoever_signs_up(ws: Workspace, web: WebServer) -> None:
    add(ws, "aktiv@example.org")
    with store(ws).change() as people:
        people.add("weg@example.org")
        people.forget("weg@example.org")
    answers = [web.post_form("/subscribe", signup(email)) for email in
               ("neu@example.org", "neu@example.org", "NEU@example.org", "aktiv@example.org", "weg@example.org")]
    assert {a.status for a in answers} == {200}
    assert len({a.body for a in answers}) == 1
    people = store(ws).load()
    assert [p.email for p in people] == ["aktiv@example.org", "neu@example.org"]
    assert people.get("aktiv@example.org").status == "active"
    assert people.is_suppressed("weg@example.org")
    sent = sorted(p.name for p in (ws.outbox_dir / "web" / "confirm").iterdir())
    assert sent == ["neu@example.org.eml"]  # nothing to the active or the erased address


def test_signing_up_again_after_leaving_needs_a_new_confirmation(ws: Workspace, web: WebServer) -> None:
    old = add(ws, "zurueck@example.org")
    web.post_form(unsubscribe_url(BASE, ws.secret(), old.id), "List-Unsubscribe=One-Click")
    before = person(ws, "zurueck@example.org")
    time.sleep(1)  # a link from the same second as the leave counts as older (see the same-second test)
    assert web.post_form("/subscribe", signup("zurueck@example.org")).status == 200
    again = person(ws, "zurueck@example.org")
    assert again.id == old.id  # the unsubscribe links in old mails keep working
    # Anyone can type the address into the form: until the mailbox owner confirms, nothing changes.
    assert again == before
    web.post_form(link_in(outbox_mail(ws, "confirm", "zurueck@example.org"), "c"), "")
    back = person(ws, "zurueck@example.org")
    assert back.status == "active" and back.consent_text == CONSENT and back.source == "web"
    assert back.confirmed_at >= back.unsubscribed_at and back.confirm_ip == "127.0.0.1"


def test_a_confirmation_link_from_before_leaving_does_not_bring_someone_back(ws: Workspace,
                                                                          web: WebServer) -> None:
    web.post_form("/subscribe", signup("frueher@example.org"))
    old_link = link_in(outbox_mail(ws, "confirm", "frueher@example.org"), "c")
    web.post_form(old_link, "")
    leaving = person(ws, "frueher@example.org")
    with SubscriberStore(ws.subscribers_path).change() as people:  # left a minute after the link was made
        people.set_status(people.get("frueher@example.org"), "unsubscribed")
        people.get("frueher@example.org").unsubscribed_at = leaving.confirmed_at + dt.timedelta(minutes=1)
    assert web.get(old_link).status == 400
    assert web.post_form(old_link, "").status == 400
    assert person(ws, "frueher@example.org").status == "unsubscribed"


def test_honeypot_stores_and_sends_nothing(ws: Workspace, web: WebServer) -> None:
    normal = web.post_form("/subscribe", signup("mensch@example.org"))
    bot = web.post_form("/subscribe", signup("bot@example.org", website="https://spam.example.com"))
    assert bot.status == 200 and bot.body == normal.body
    assert person(ws, "bot@example.org") is None
    assert not (ws.outbox_dir / "web" / "confirm" / "bot@example.org.eml").exists()


def test_missing_consent_or_bad_address_shows_the_form_again(ws: Workspace, web: WebServer) -> None:
    reply = web.post_form("/subscribe", signup("anna@example.org", "Anna", consent=False))
    assert reply.status == 400
    assert "Bitte setze das Häkchen" in reply.text
    assert 'value="anna@example.org"' in reply.text and 'value="Anna"' in reply.text
    reply = web.post_form("/subscribe", signup('"><script>alert(1)</script>'))
    assert reply.status == 400
    assert "Bitte gib eine gültige E-Mail-Adresse ein" in reply.text
    assert "<script>alert(1)" not in reply.text and "&lt;script&gt;" in reply.text
    assert not ws.subscribers_path.exists()


def test_signups_per_ip_are_limited(ws: Workspace, serve: Starter) -> None:
    web = serve(signups_per_hour=3)
    answers = [web.post_form("/subscribe", signup(f"p{i}@example.org")) for i in range(4)]
    assert [a.status for a in answers] == [200, 200, 200, 429]
    assert "Bitte versuche es in einer Stunde noch einmal" in answers[3].text
    assert person(ws, "p3@example.org") is None
    assert len(store(ws).load()) == 3


def test_mails_per_address_are_limited(ws: Workspace, smtp: SmtpServer, mailbox: Mailbox, serve: Starter) -> None:
    web = serve(signups_per_hour=50, mails_per_address_per_day=2)
    answers = [web.post_form("/subscribe", signup("opfer@example.org")) for _ in range(5)]
    assert {a.status for a in answers} == {200} and len({a.body for a in answers}) == 1
    assert mailbox.count("opfer@example.org") == 2
    web.post_form("/subscribe", signup("andere@example.org"))
    assert mailbox.count("andere@example.org") == 1


def test_rate_limit_window_slides() -> None:
    clock = [1000.0]
    limit = RateLimit(2, 3600, lambda: clock[0])
    assert limit.allow("ip") and limit.allow("ip") and not limit.allow("ip")
    assert limit.allow("other")
    clock[0] += 3599
    assert not limit.allow("ip")
    clock[0] += 2
    assert limit.allow("ip")


def test_client_ip_from_forwarded_for_only_behind_a_trusted_proxy(ws: Workspace, serve: Starter) -> None:
    direct = serve()
    direct.post_form("/subscribe", signup("a@example.org"), {"X-Forwarded-For": "203.0.113.7"})
    assert person(ws, "a@example.org").signup_ip == "127.0.0.1"
    proxied = serve(trust_proxy=True)
    proxied.post_form("/subscribe", signup("b@example.org"), {"X-Forwarded-For": "198.51.100.1, 203.0.113.9"})
    assert person(ws, "b@example.org").signup_ip == "203.0.113.9"  # the one our proxy added


def test_mail_server_down_answers_the_same_and_logs_it(ws: Workspace, serve: Starter, caplog) -> None:
    """The mail goes out after the answer, so neither timing nor a 503 tells who is on the list."""
    configure(ws, "smtp", host="127.0.0.1", port=free_port(), security="none", timeout=5)
    web = serve()
    add(ws, "schon@example.org")
    new = web.post_form("/subscribe", signup("neu@example.org"))
    known = web.post_form("/subscribe", signup("schon@example.org"))
    assert new.status == known.status == 200 and new.body == known.body
    assert "confirm-Mail nicht gesendet" in caplog.text and "Connection refused" in caplog.text
    assert "neu@example.org" not in caplog.text
    assert web.get("/healthz").status == 200


def test_password_command_is_asked_once_not_per_mail(ws: Workspace, serve: Starter, mailbox: Mailbox,
                                                     tmp_path: Path) -> None:
    server = SmtpServer(mailbox, users={"mira": "aus-dem-schluesselbund"}).start()
    asked = tmp_path / "asked"
    try:
        configure(ws, "smtp", host="127.0.0.1", port=server.port, security="none", username="mira",
                  password_command=f"echo gefragt >> {asked}; echo aus-dem-schluesselbund")
        web = serve()
        for address in ("eins@example.org", "zwei@example.org", "drei@example.org"):
            assert web.post_form("/subscribe", signup(address)).status == 200
        assert sorted(r.rcpt_to[0] for r in mailbox.received) == [
            "drei@example.org", "eins@example.org", "zwei@example.org"]
        assert asked.read_text() == "gefragt\n"  # a keyring prompt would appear once, not per sign-up
    finally:
        server.stop()


def test_head_requests_change_nothing(ws: Workspace, web: WebServer) -> None:
    web.post_form("/subscribe", signup("kopf@example.org"))
    confirm = link_in(outbox_mail(ws, "confirm", "kopf@example.org"), "c")
    assert web.request("HEAD", confirm).status == 200
    assert person(ws, "kopf@example.org").status == "pending"
    web.post_form(confirm, "")
    leave = unsubscribe_url(BASE, ws.secret(), person(ws, "kopf@example.org").id)
    assert web.request("HEAD", leave).status == 200
    assert person(ws, "kopf@example.org").status == "active"


# --- hostile input ---------------------------------------------------------------------------------


def test_hostile_requests_get_4xx_store_nothing_and_the_server_keeps_serving(ws: Workspace, web: WebServer) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    attempts = [
        (signup("a@example.org") + "&x=" + "a" * 20_000, form, 413),         # over the app's limit
        (signup("b@example.org") + "&x=" + "a" * 200_000, form, 413),        # refused by waitress already
        (b"email=c%FF%FE%40example.org&consent=yes", form, 400),             # percent-encoded non-UTF-8
        (b"email=d\xff\xfe@example.org&name=\xe4&consent=yes", form, 400),   # raw Latin-1 bytes
        ("&".join(f"f{i}=1" for i in range(50)) + "&email=e@example.org&consent=yes", form, 400),  # field flood
        (signup("f@example.org\r\nBcc: victim@example.org"), form, 400),     # header injection in the address
        (signup("g@example.org"), {"Content-Type": "multipart/form-data; boundary=x"}, 415),
        (signup("h@example.org"), {"Content-Type": "application/json"}, 415),
    ]
    for body, headers, status in attempts:
        reply = web.request("POST", "/subscribe", body, headers)
        assert reply.status == status, (body[:60], reply.status, reply.text[:200])
        assert "Traceback" not in reply.text
    assert "Das war zu viel auf einmal" in web.post_form("/subscribe", "x=" + "a" * 20_000).text
    assert not ws.subscribers_path.exists()
    assert not (ws.outbox_dir / "web").exists()
    assert web.get("/healthz").status == 200
    assert web.post_form("/subscribe", signup("ok@example.org")).status == 200


def test_header_injection_in_the_name_is_stored_as_data(ws: Workspace, web: WebServer) -> None:
    name = "Eve\r\nBcc: victim@example.org\r\n\r\n<b>hi</b>\x00"
    assert web.post_form("/subscribe", signup("eve@example.org", name)).status == 200
    eve = person(ws, "eve@example.org")
    assert eve.name == "Eve Bcc: victim@example.org <b>hi</b>"
    mail = outbox_mail(ws, "confirm", "eve@example.org")
    head = mail.partition(b"\r\n\r\n")[0]
    assert b"Bcc" not in head and b"victim" not in mail
    assert parse(mail)["To"] == "eve@example.org"
    assert "Bcc" in ws.subscribers_path.read_text()  # kept as the (odd) name it is, inside a TOML string
    assert store(ws).load().get("victim@example.org") is None


# --- English, the form snippet, the serve command ---------------------------------------------------


def test_english_pages_and_mails(ws: Workspace, serve: Starter) -> None:
    config = ws.root / "newsletter.toml"
    config.write_text(config.read_text().replace('language = "de"', 'language = "en"')
                      .replace('consent_text = "Ja, ich möchte den Newsletter erhalten."\n', ""))
    web = serve()
    form = web.get("/subscribe")
    assert '<html lang="en">' in form.text and "Subscribe to the newsletter" in form.text
    assert "Yes, I would like to receive the newsletter “Impuls” by email." in form.text
    assert "Almost done" in web.post_form("/subscribe", signup("anna@example.org")).text
    mail = parse(outbox_mail(ws, "confirm", "anna@example.org"))
    assert mail["Subject"] == "Please confirm your subscription to “Impuls”"
    assert person(ws, "anna@example.org").consent_text.startswith("Yes, I would like")
    anna = add(ws, "ben@example.org")
    assert "Unsubscribe from the newsletter?" in web.get(unsubscribe_url(BASE, ws.secret(), anna.id)).text
    assert "This page does not exist" in web.get("/nope").text


def test_form_command_prints_a_snippet_that_signs_up(ws: Workspace, runner, web: WebServer) -> None:
    result = invoke(runner, "form")
    assert result.exit_code == 0, result.output
    snippet = result.stdout
    assert f'action="{BASE}/subscribe"' in snippet and 'method="post"' in snippet
    assert CONSENT in snippet and 'name="website"' in snippet
    assert "<script" not in snippet and "<style" not in snippet
    names = set(re.findall(r'name="([^"]+)"', snippet))
    assert names == {"email", "name", "website", "consent"}
    reply = web.post_form("/subscribe", signup("vom-formular@example.org"),
                          {"Referer": "https://praxis.example.org/kontakt"})
    assert reply.status == 200
    assert person(ws, "vom-formular@example.org").signup_page == "https://praxis.example.org"


def test_serve_and_form_need_base_url(ws: Workspace, runner) -> None:
    config = ws.root / "newsletter.toml"
    config.write_text(config.read_text().replace('base_url = "https://newsletter.praxis.example.org"\n', ""))
    for command in ("serve", "form"):
        result = invoke(runner, command)
        assert result.exit_code == 1
        assert "base_url" in result.stderr and "Traceback" not in result.output


def test_bad_web_settings_are_named(ws: Workspace, runner) -> None:
    configure(ws, "web", mails_per_address_per_day=0)
    result = invoke(runner, "form")
    assert result.exit_code == 1
    assert "[web] mails_per_address_per_day: muss mindestens 1 sein" in result.stderr


def test_serve_command_runs_until_ctrl_c(ws: Workspace) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--workspace", str(ws.root), "serve", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        first_line = process.stdout.readline()  # printed once the socket is bound
        assert f"http://127.0.0.1:{port}" in first_line, first_line + (process.stderr.read() if
                                                                       process.poll() is not None else "")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/healthz")
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Server beendet" in err and "Traceback" not in err


# --- pruning and concurrency ---------------------------------------------------------------------


def test_prune_pending_removes_only_expired_signups(ws: Workspace) -> None:
    now = dt.datetime(2026, 12, 10, 12, 0, tzinfo=dt.UTC)
    with store(ws).change() as people:
        for email, status, days in [("alt@example.org", "pending", 8), ("frisch@example.org", "pending", 6),
                                    ("aktiv@example.org", "active", 30), ("weg@example.org", "unsubscribed", 30)]:
            people.add(email, status=status, source="web").subscribed_at = now - dt.timedelta(days=days)
        people.add("ohne@example.org", status="pending").subscribed_at = None
    before = file_bytes(ws)
    would = prune_pending(store(ws), dt.timedelta(days=7), at=now, dry_run=True)
    assert [p.email for p in would] == ["alt@example.org"]
    assert file_bytes(ws) == before
    removed = prune_pending(store(ws), dt.timedelta(days=7), at=now)
    assert [p.email for p in removed] == ["alt@example.org"]
    assert sorted(p.email for p in store(ws).load()) == [
        "aktiv@example.org", "frisch@example.org", "ohne@example.org", "weg@example.org"]
    assert prune_pending(store(ws), dt.timedelta(days=7), at=now) == []


def test_unsubscribes_while_imports_run_lose_nothing(ws: Workspace, web: WebServer) -> None:
    """Unsubscribes through the app while four `subscribers import` processes write the same file."""
    leaving = [add(ws, f"geht{i}@example.org") for i in range(40)]
    files = []
    for batch in range(4):
        csv = ws.root / f"import{batch}.csv"
        csv.write_text("email,name\n" + "".join(f"neu{batch}-{i}@example.org,Neu {i}\n" for i in range(150)))
        files.append(csv)
    imports = [subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--workspace", str(ws.root), "subscribers", "import", str(csv),
         "--status", "active"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for csv in files]
    statuses: list[int] = []

    def leave(group: list[Subscriber]) -> None:
        for subscriber in group:
            url = unsubscribe_url(BASE, ws.secret(), subscriber.id)
            statuses.append(web.post_form(url, "List-Unsubscribe=One-Click").status)

    threads = [threading.Thread(target=leave, args=(leaving[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for process in imports:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, out + err
    assert statuses == [200] * 40
    people = store(ws).load()
    assert all(people.get(s.email).status == "unsubscribed" for s in leaving)
    for batch in range(4):
        for i in range(150):
            assert people.get(f"neu{batch}-{i}@example.org").status == "active"
    assert len(people) == 40 + 4 * 150


def test_invite_sends_hand_added_people_their_confirmation_link(ws: Workspace, web: WebServer, runner) -> None:
    with SubscriberStore(ws.subscribers_path).change() as people:
        people.add("papier@example.org", "Paula Papier", source="Anmeldezettel Praxis")
        people.add("schon@example.org", status="active")
    result = invoke(runner, "subscribers", "invite", "--yes")
    assert result.exit_code == 0, result.output
    assert "Bestätigungsmail an papier@example.org" in result.stdout and "schon@" not in result.stdout
    assert sorted(p.name for p in (ws.outbox_dir / "web" / "confirm").iterdir()) == ["papier@example.org.eml"]
    assert person(ws, "papier@example.org").invited_at is not None
    web.post_form(link_in(outbox_mail(ws, "confirm", "papier@example.org"), "c"), "")
    paula = person(ws, "papier@example.org")
    assert paula.status == "active" and paula.source == "Anmeldezettel Praxis" and paula.confirm_ip
    refused = invoke(runner, "subscribers", "invite", "schon@example.org", "--yes")
    assert refused.exit_code == 1 and "ist nicht unbestätigt" in refused.stderr


# -- limits that hold, evidence and times you can trust (issue 15) ---------------------------


def confirm_mails(ws: Workspace) -> list[str]:
    return sorted(path.stem for path in (ws.outbox_dir / "web" / "confirm").glob("*.eml"))


def test_one_mailbox_shares_one_limit_however_it_is_spelled(ws: Workspace, serve: Starter) -> None:
    web = serve(signups_per_hour=50, mails_per_address_per_day=2)
    for address in ("opfer+1@example.org", "opfer+2@example.org", "OPFER@example.org", "opfer+3@example.org",
                    "a.n.n.a@gmail.com", "anna+x@googlemail.com", "Anna@gmail.com", "an.na@gmail.com"):
        reply = web.post_form("/subscribe", signup(address))
        assert reply.status == 200 and SAME_ANSWER in reply.text
    assert confirm_mails(ws) == ["a.n.n.a@gmail.com", "anna+x@googlemail.com",
                                 "opfer+1@example.org", "opfer+2@example.org"]


def test_a_domain_has_a_daily_ceiling(ws: Workspace, serve: Starter) -> None:
    web = serve(signups_per_hour=50, mails_per_domain_per_day=3)
    for index in range(5):
        web.post_form("/subscribe", signup(f"p{index}@flut.example"))
    web.post_form("/subscribe", signup("anna@example.org"))
    assert confirm_mails(ws) == ["anna@example.org", "p0@flut.example", "p1@flut.example", "p2@flut.example"]


def test_forwarded_for_counts_only_when_it_is_an_ip_address(ws: Workspace, serve: Starter) -> None:
    web = serve(trust_proxy=True, signups_per_hour=50)
    for address, forwarded in (("a@example.org", "<script>alert(1)</script>" + "x" * 8_000),
                               ("b@example.org", "198.51.100.1, 203.0.113.9"),
                               ("c@example.org", "2001:DB8::1"), ("d@example.org", "203.0.113.9:443")):
        assert web.post_form("/subscribe", signup(address), {"X-Forwarded-For": forwarded}).status == 200
    ips = {p.email: p.signup_ip for p in store(ws).load()}
    assert ips == {"a@example.org": "127.0.0.1", "b@example.org": "203.0.113.9",
                   "c@example.org": "2001:db8::1", "d@example.org": "127.0.0.1"}
    assert len(web.app.signups.per_ip) == 3  # the peer (for both bad values) and the two real addresses


def test_the_rate_limiters_memory_is_bounded() -> None:
    clock = [0.0]
    limit = RateLimit(2, 3600, lambda: clock[0], max_keys=100)
    assert all(limit.allow(f"198.51.{i // 256}.{i % 256}") for i in range(20_000))
    assert len(limit) == 100
    recent = "198.51.78.31"  # among the newest: still counted, so still limited
    assert limit.allow(recent) and not limit.allow(recent)


def test_a_used_link_is_limited_per_ip_a_first_click_never(ws: Workspace, web: WebServer) -> None:
    people = [add(ws, f"leser{i}@example.org") for i in range(40)]
    links = [unsubscribe_url(BASE, ws.secret(), p.id) for p in people]
    again = [web.post_form(links[0], "List-Unsubscribe=One-Click").status for _ in range(35)]
    assert again[:31] == [200] * 31 and set(again[31:]) == {429}
    assert {web.post_form(link, "List-Unsubscribe=One-Click").status for link in links[1:]} == {200}
    assert {p.status for p in store(ws).load()} == {"unsubscribed"}
    assert "Abmeldelink" in {e.source for p in store(ws).load() for e in p.events}


def test_a_confirmation_link_from_the_second_of_an_unsubscribe_never_brings_someone_back(
        ws: Workspace, web: WebServer) -> None:
    person_ = add(ws, "sekunde@example.org")
    assert web.post_form(unsubscribe_url(BASE, ws.secret(), person_.id), "").status == 200
    left = person(ws, "sekunde@example.org").unsubscribed_at
    same_second = make_token(ws.secret(), person_.id, CONFIRM, issued_at=int(left.timestamp()))
    for _ in range(3):
        assert web.post_form(f"/c/{same_second}", "").status == 400
        assert person(ws, "sekunde@example.org").status == "unsubscribed"
    later = make_token(ws.secret(), person_.id, CONFIRM, issued_at=int(left.timestamp()) + 1)
    assert web.post_form(f"/c/{later}", "").status == 200
    assert person(ws, "sekunde@example.org").status == "active"


def test_serve_refuses_an_http_base_url_as_check_does(ws: Workspace, runner) -> None:
    config = ws.root / "newsletter.toml"
    config.write_text(config.read_text().replace(f'base_url = "{BASE}"', 'base_url = "http://newsletter.example.net"'))
    result = invoke(runner, "serve", "--port", str(free_port()))
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = "[newsletter] base_url muss mit https:// beginnen (Ein-Klick-Abmeldung nach RFC 8058)"
    assert line in result.stderr
    issue = write_issue(ws, "2026-12-test", "Hallo.")
    assert line in invoke(runner, "check", str(issue)).output


def test_slow_connections_do_not_take_serve_offline(web: WebServer) -> None:
    """150 clients that send a header line now and then and never finish: /healthz keeps answering."""
    import socket

    slow = [socket.create_connection(("127.0.0.1", web.port), timeout=5) for _ in range(150)]
    try:
        for connection in slow:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        answers = []
        for round_ in range(12):
            for connection in slow:
                connection.sendall(f"X-Slow-{round_}: 1\r\n".encode())
            answers.append(web.get("/healthz").status)
            time.sleep(0.25)
        assert answers == [200] * 12
    finally:
        for connection in slow:
            connection.close()


def test_an_unsubscribe_counts_from_its_answer_before_the_file_is_written(ws: Workspace, runner) -> None:
    """What `serve` answered is in the change log: readers see it at once, a writer applies it once."""
    from newsletter.changes import UNSUBSCRIBE, ChangeLog
    from newsletter.subscribers import now

    anna, bea = add(ws, "anna@example.org"), add(ws, "bea@example.org")
    before = file_bytes(ws)
    log = ChangeLog(ws.state_dir / "changes.sqlite")
    log.append(UNSUBSCRIBE, anna.id, now(), source="Abmeldelink")
    assert file_bytes(ws) == before
    assert person(ws, "anna@example.org").status == "unsubscribed"
    assert [p.email for p in store(ws).active()] == ["bea@example.org"]  # a send's audience
    listed = invoke(runner, "subscribers", "list", "--json")
    assert {p["email"]: p["status"] for p in json.loads(listed.stdout)} == {
        "anna@example.org": "unsubscribed", "bea@example.org": "active"}
    pending = log.pending()
    with store(ws).change():  # any writer applies the log …
        pass
    assert log.pending() == [] and b'status = "unsubscribed"' in file_bytes(ws)
    with store(ws).change() as people:  # … and applying it again (a writer killed before clearing it) changes nothing
        from newsletter.changes import apply_changes

        apply_changes(people, pending)
        assert not people.changed
    assert [e.kind for e in person(ws, "anna@example.org").events] == ["added", "unsubscribed"]
    assert bea == person(ws, "bea@example.org")


def test_forget_also_erases_what_the_change_log_holds(ws: Workspace, runner) -> None:
    """A sign-up answered but not yet written, and its confirmation mail not yet sent: `forget`
    leaves neither behind, so no mail goes to someone who was just erased."""
    from newsletter.changes import SIGN_UP, ChangeLog
    from newsletter.subscribers import now

    log = ChangeLog(ws.state_dir / "changes.sqlite")
    log.append(SIGN_UP, "", now(), email="Geheim@example.org", name="G", ip="203.0.113.5", page="",
               consent_text=CONSENT, consent_version="1", message_id="<x@praxis.example.org>")
    log.append(SIGN_UP, "", now(), email="bleibt@example.org", name="", ip="203.0.113.6", page="",
               consent_text=CONSENT, consent_version="1", message_id="<y@praxis.example.org>")
    result = invoke(runner, "subscribers", "forget", "geheim@example.org", "--yes")
    assert result.exit_code == 0, result.output
    assert person(ws, "geheim@example.org") is None
    assert [mail.email for mail in log.mails_due()] == ["bleibt@example.org"]
    raw = b"".join(path.read_bytes() for path in ws.state_dir.glob("changes.sqlite*"))
    assert b"bleibt@example.org" in raw and b"geheim" not in raw.lower()  # not even in freed pages
