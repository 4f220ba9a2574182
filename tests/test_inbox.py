"""`newsletter inbox` against a real IMAP server (Dovecot on loopback, TLS from a test CA):
bounces, complaints, mailto unsubscribes, auto-replies and replies; nothing lost, nothing twice."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from conftest import invoke, write_issue
from imap_server import PASSWORD, USER, ImapServer, available
from mail_samples import (
    SECRET_TEXT,
    arf_complaint,
    broken_mime,
    exchange_dsn,
    exim_bounce,
    gmail_dsn,
    human_reply,
    large_reply,
    mailto_unsubscribe,
    out_of_office,
    plain_unsubscribe,
    postfix_dsn,
    unrelated,
)
from postfix_server import PostfixServer
from postfix_server import available as postfix_available
from send_support import add_people, smtp_config

from newsletter.journal import SendJournal, journal_path
from newsletter.subscribers import SubscriberStore
from newsletter.tokens import make_token, unsubscribe_url
from newsletter.workspace import Workspace

pytestmark = pytest.mark.skipif(not available(), reason="needs Debian's dovecot-imapd (and root, for its users)")

PEOPLE = [(f"p{i}@example.org", f"Person {i}", "active") for i in range(6)]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def imap(ca: trustme.CA) -> Iterator[ImapServer]:
    server = ImapServer(ca).start()
    yield server
    server.stop()


def imap_config(ws: Workspace, server: ImapServer, ca: trustme.CA, **settings: object) -> None:
    """[imap] for the test server (replacing one written before: it is always the last section)."""
    ca.cert_pem.write_to_path(str(ws.root / "ca.pem"))
    values = {"host": "127.0.0.1", "port": server.port, "security": "starttls", "username": USER,
              "tls_ca_file": "ca.pem", **settings}
    values = {key: value for key, value in values.items() if value is not None}
    config = ws.root / "newsletter.toml"
    text = config.read_text().split("\n[imap]\n")[0]
    config.write_text(text + "\n[imap]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items()) + "\n")
    ws.__dict__.pop("config", None)


def send_issue_to_outbox(ws: Workspace, runner, name: str = "2026-12-impuls", subject: str = "Impuls im Dezember"
                         ) -> dict[str, str]:
    """A real send (to the outbox); returns each address's Message-ID from the journal."""
    path = write_issue(ws, name, "Hallo {{ first_name | default(\"du\") }},\n\nein Text.\n", subject=subject)
    result = invoke(runner, "send", str(path), "--yes")
    assert result.exit_code == 0, result.output
    with SendJournal(journal_path(ws.journal_dir, name)) as journal:
        return {row.email: row.message_id or "" for row in journal.rows(["sent"])}


@pytest.fixture
def sent(ws: Workspace, runner, imap: ImapServer, ca: trustme.CA, monkeypatch) -> dict[str, str]:
    add_people(ws, PEOPLE)
    ids = send_issue_to_outbox(ws, runner)
    imap_config(ws, imap, ca)
    monkeypatch.setenv("NEWSLETTER_IMAP_PASSWORD", PASSWORD)
    return ids


def status(ws: Workspace, email: str) -> str:
    person = SubscriberStore(ws.subscribers_path).load().get(email)
    assert person is not None
    return person.status


def run_inbox(runner, *args: str):
    result = invoke(runner, "inbox", *args)
    assert result.exit_code == 0, result.output
    return result


def envid(message_id: str) -> str:
    return message_id.strip("<>").partition("@")[0]


# -- bounces ------------------------------------------------------------------------------------


def test_a_hard_bounce_marks_the_address_bounced_and_moves_the_mail(ws, runner, imap, sent) -> None:
    imap.append(postfix_dsn("p1@example.org", sent["p1@example.org"], envid=envid(sent["p1@example.org"])))
    result = run_inbox(runner)
    assert status(ws, "p1@example.org") == "bounced"
    assert {status(ws, p[0]) for p in PEOPLE if p[0] != "p1@example.org"} == {"active"}
    assert "unzustellbar: p1@example.org, 2026-12-impuls (5.1.1" in result.stdout
    assert imap.folders() == {"INBOX": 0, "Newsletter": 0, "Newsletter/Unzustellbar": 1}
    with SendJournal(journal_path(ws.journal_dir, "2026-12-impuls")) as journal:
        row = next(r for r in journal.rows(["sent"]) if r.email == "p1@example.org")
        assert (row.bounce_kind, row.bounce_status) == ("hard", "5.1.1")
        assert journal.bounce_counts() == {"hard": 1, "soft": 0, "policy": 0}
    assert "später zurückgekommen (newsletter inbox): 1 unzustellbar" in invoke(runner, "status").stdout
    shown = invoke(runner, "subscribers", "show", "p1@example.org").stdout
    assert "unzustellbar" in shown and "5.1.1" in shown and "2026-12-impuls" in shown
    again = run_inbox(runner)  # read once: a second run finds nothing new
    assert "neue Mails" in again.stdout


@pytest.mark.parametrize("sample", [exim_bounce, exchange_dsn], ids=["exim", "exchange"])
def test_other_mail_servers_bounces_are_understood(ws, runner, imap, sent, sample) -> None:
    imap.append(sample("p2@example.org", sent["p2@example.org"]))
    run_inbox(runner)
    assert status(ws, "p2@example.org") == "bounced"
    assert imap.folders()["Newsletter/Unzustellbar"] == 1


def test_a_soft_bounce_marks_only_after_three_issues_in_a_row(ws, runner, imap, sent) -> None:
    ids = [sent]
    for month, name in ((1, "2027-01-impuls"), (2, "2027-02-impuls")):
        ids.append(send_issue_to_outbox(ws, runner, name, subject=f"Impuls im Monat {month}"))
    for n, issue_ids in enumerate(ids):
        imap.append(gmail_dsn("p3@example.org", issue_ids["p3@example.org"]))
        result = run_inbox(runner)
        assert status(ws, "p3@example.org") == ("bounced" if n == 2 else "active"), n
    assert "zum dritten Mal in Folge" in result.stdout
    assert imap.folders()["Newsletter/Unzustellbar"] == 3


def test_a_policy_refusal_marks_nobody_and_is_listed(ws, runner, imap, sent) -> None:
    imap.append(postfix_dsn("p4@example.org", sent["p4@example.org"], status="5.7.1",
                            diagnostic="smtp; 550 5.7.1 Message rejected due to DMARC policy"))
    result = run_inbox(runner)
    assert status(ws, "p4@example.org") == "active"
    assert "Ablehnung deines Versands: p4@example.org" in result.stdout and "DMARC" in result.stdout
    assert "newsletter doctor" in result.stdout


def test_a_forged_or_unmatched_bounce_changes_nothing(ws, runner, imap, sent) -> None:
    before = ws.subscribers_path.read_bytes()
    imap.append(postfix_dsn("p0@example.org", "<2026-12-impuls.0123456789abcdef0123@praxis.example.org>",
                            envid="2026-12-impuls.0123456789abcdef0123"),  # an id we never gave
                postfix_dsn("fremd@example.org", "<nichtvonuns@example.net>"))
    result = run_inbox(runner)
    assert ws.subscribers_path.read_bytes() == before
    assert imap.folders() == {"INBOX": 2}  # left where they are, not hidden in our folders
    assert "Bounce ohne Bezug zu einem Versand" in result.stdout


# -- complaints, unsubscribes, auto-replies, replies ------------------------------------------


def test_a_complaint_unsubscribes_at_once(ws, runner, imap, sent) -> None:
    imap.append(arf_complaint("p5@example.org", sent["p5@example.org"]))
    result = run_inbox(runner)
    assert status(ws, "p5@example.org") == "unsubscribed"
    assert "Beschwerde (abgemeldet)" in result.stdout
    assert imap.folders()["Newsletter/Beschwerden"] == 1


def test_a_redacted_complaint_is_matched_by_its_unsubscribe_link(ws, runner, imap, sent) -> None:
    person = SubscriberStore(ws.subscribers_path).load().get("p2@example.org")
    url = unsubscribe_url(ws.config.base_url, ws.secret(), person.id)
    imap.append(arf_complaint("redacted@example.org", "<redacted@example.org>", unsubscribe_url=url))
    run_inbox(runner)
    assert status(ws, "p2@example.org") == "unsubscribed"


def test_a_mailto_unsubscribe_with_its_token_unsubscribes_whatever_the_sender(ws, runner, imap, sent) -> None:
    person = SubscriberStore(ws.subscribers_path).load().get("p1@example.org")
    imap.append(mailto_unsubscribe("weitergeleitet@anders.example", make_token(ws.secret(), person.id)))
    result = run_inbox(runner)
    assert status(ws, "p1@example.org") == "unsubscribed"
    assert "abgemeldet: p1@example.org (mit Abmelde-Token)" in result.stdout
    assert imap.folders()["Newsletter/Abmeldungen"] == 1


def test_a_plain_unsubscribe_mail_counts_only_from_a_listed_address(ws, runner, imap, sent) -> None:
    imap.append(plain_unsubscribe("p4@example.org"), plain_unsubscribe("unbekannt@example.org"))
    result = run_inbox(runner)
    assert status(ws, "p4@example.org") == "unsubscribed"
    assert "abgemeldet: p4@example.org (ohne Token, nach Absender)" in result.stdout
    assert imap.folders() == {"INBOX": 1, "Newsletter": 0, "Newsletter/Abmeldungen": 1}


def test_tokens_that_begin_with_a_dash_are_read_whole(ws, runner, imap, sent) -> None:
    """Ids are URL-safe base64 (secrets.token_urlsafe): a leading "-" or "_" must not cut the token short."""
    ids = ("-starts-with-a-dash", "_starts_with_an_underscore")
    with SubscriberStore(ws.subscribers_path).change() as listed:
        for n, sid in enumerate(ids):
            listed.add(f"strich{n}@example.org", "", status="active", subscriber_id=sid)
    for n, sid in enumerate(ids):
        imap.append(mailto_unsubscribe(f"x{n}@anders.example", make_token(ws.secret(), sid)))
    run_inbox(runner)
    assert (status(ws, "strich0@example.org"), status(ws, "strich1@example.org")) == ("unsubscribed", "unsubscribed")


def test_a_forged_token_unsubscribes_nobody(ws, runner, imap, sent) -> None:
    before = ws.subscribers_path.read_bytes()
    person = SubscriberStore(ws.subscribers_path).load().get("p1@example.org")
    forged = make_token(b"not the workspace secret", person.id)
    imap.append(mailto_unsubscribe("angreifer@example.net", forged))
    run_inbox(runner)
    assert ws.subscribers_path.read_bytes() == before


def test_an_auto_reply_is_moved_and_nothing_else(ws, runner, imap, sent) -> None:
    before = ws.subscribers_path.read_bytes()
    imap.append(out_of_office("p0@example.org", sent["p0@example.org"]))
    run_inbox(runner)
    assert ws.subscribers_path.read_bytes() == before
    assert imap.folders()["Newsletter/Abwesenheit"] == 1


def test_a_readers_reply_stays_and_its_text_is_kept_nowhere(ws, runner, imap, sent) -> None:
    imap.append(human_reply("p0@example.org", sent["p0@example.org"]), unrelated())
    result = run_inbox(runner)
    assert "Antwort: p0@example.org · Re: Impuls im Dezember · Wed, 02 Dec 2026 20:15:00 +0100" in result.stdout
    assert imap.folders() == {"INBOX": 2}
    as_json = invoke(runner, "inbox", "--json")  # nothing new: the reply is not counted twice
    assert json.loads(as_json.stdout)["mails"] == []
    for path in ws.state_dir.rglob("*"):
        if path.is_file():
            assert SECRET_TEXT.encode() not in path.read_bytes(), path
            assert b"Trennung" not in path.read_bytes(), path
    assert SECRET_TEXT not in result.output


def test_dry_run_changes_nothing_anywhere(ws, runner, imap, sent) -> None:
    imap.append(postfix_dsn("p1@example.org", sent["p1@example.org"]), arf_complaint("p2@example.org",
                                                                                    sent["p2@example.org"]))
    before = (ws.subscribers_path.read_bytes(), journal_path(ws.journal_dir, "2026-12-impuls").read_bytes())
    result = run_inbox(runner, "--dry-run")
    assert "Probelauf" in result.stdout and "unzustellbar: p1@example.org" in result.stdout
    assert (ws.subscribers_path.read_bytes(), journal_path(ws.journal_dir, "2026-12-impuls").read_bytes()) == before
    assert imap.folders() == {"INBOX": 2}
    assert not (ws.state_dir / "inbox.sqlite").exists() or "p1" not in (ws.state_dir / "inbox.sqlite").read_text(
        errors="replace")
    run_inbox(runner)  # and the real run still finds both
    assert (status(ws, "p1@example.org"), status(ws, "p2@example.org")) == ("bounced", "unsubscribed")


# -- bad input: one line each, never a traceback ------------------------------------------------


def test_a_wrong_password_is_one_clear_line(ws, runner, imap, sent, monkeypatch) -> None:
    monkeypatch.setenv("NEWSLETTER_IMAP_PASSWORD", "falsch")
    result = invoke(runner, "inbox")
    assert result.exit_code == 1
    assert result.stderr == (f"Fehler: 127.0.0.1:{imap.port}: Anmeldung am Postfach abgelehnt; Benutzername und "
                             "Passwort prüfen (NEWSLETTER_IMAP_PASSWORD)\n")


def test_a_missing_password_is_one_clear_line(ws, runner, imap, sent, monkeypatch) -> None:
    monkeypatch.delenv("NEWSLETTER_IMAP_PASSWORD")
    result = invoke(runner, "inbox")
    assert result.exit_code == 1 and "Postfach-Passwort fehlt" in result.stderr


def test_a_server_without_tls_is_refused(ws, runner, sent, ca, monkeypatch) -> None:
    plain = ImapServer().start()  # no certificate: no STARTTLS
    try:
        imap_config(ws, plain, ca)
        result = invoke(runner, "inbox")
        assert result.exit_code == 1
        assert "der Server bietet kein STARTTLS an" in result.stderr and "Traceback" not in result.output
    finally:
        plain.stop()


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_a_self_signed_certificate_is_refused_and_accepted_with_its_ca(ws, runner, imap, ca, sent,
                                                                      security) -> None:
    port = imap.ssl_port if security == "ssl" else imap.port
    imap_config(ws, imap, ca, port=port, security=security, tls_ca_file=None)
    result = invoke(runner, "inbox")
    assert result.exit_code == 1 and "TLS-Zertifikat nicht vertrauenswürdig" in result.stderr
    assert "Traceback" not in result.output and result.stderr.count("\n") == 1
    imap_config(ws, imap, ca, port=port, security=security)
    assert invoke(runner, "inbox").exit_code == 0


def test_broken_mime_and_a_20_mb_mail_are_skipped_with_a_note(ws, runner, imap, sent) -> None:
    imap.append(broken_mime(), large_reply("p0@example.org", sent["p0@example.org"]),
                postfix_dsn("p1@example.org", sent["p1@example.org"]))
    result = run_inbox(runner)
    assert "20 MB groß: nur nach ihren ersten 2 MB beurteilt" in result.stdout
    assert status(ws, "p1@example.org") == "bounced"
    assert imap.folders()["INBOX"] == 2


# -- crash safety: SIGKILL anywhere, then a rerun: every action exactly once -----------------------


def _mixed_mailbox(ws: Workspace, sent: dict[str, str], count: int) -> tuple[list[bytes], dict[str, str]]:
    """`count` mails, a realistic mix; and what each listed address must end as."""
    people = SubscriberStore(ws.subscribers_path).load()
    rng = random.Random(7)
    mails: list[bytes] = []
    expected = {email: "active" for email in sent}
    addresses = sorted(sent)
    for n in range(count):
        kind = rng.choice(["unrelated", "unrelated", "reply", "ooo", "hard", "soft", "unsubscribe", "complaint"])
        address = rng.choice(addresses)
        message_id = sent[address]
        if kind == "hard":
            mails.append(postfix_dsn(address, message_id).replace(b"A1B2C3@", f"{n}@".encode()))
            expected[address] = "unsubscribed" if expected[address] == "unsubscribed" else "bounced"
        elif kind == "soft":
            mails.append(gmail_dsn(address, message_id).replace(b"gmail.dsn@", f"{n}@".encode()))
        elif kind == "unsubscribe":
            token = make_token(ws.secret(), people.get(address).id)
            mails.append(mailto_unsubscribe(f"leser{n}@anders.example", token).replace(b"Message-ID: <CA",
                                                                                         f"Message-ID: <{n}".encode()))
            expected[address] = "unsubscribed"
        elif kind == "complaint":
            mails.append(arf_complaint(address, message_id).replace(b"arf-1234@", f"arf-{n}@".encode()))
            expected[address] = "unsubscribed"
        elif kind == "ooo":
            mails.append(out_of_office(address, message_id).replace(b"Message-ID: <ooo-", f"Message-ID: <{n}".encode()))
        elif kind == "reply":
            mails.append(human_reply(address, message_id).replace(b"Message-ID: <reply-", f"Message-ID: <{n}".encode()))
        else:
            mails.append(unrelated(n))
    return mails, expected


def _done(ws: Workspace) -> int:
    """How many mails the inbox state has marked done (read while `inbox` runs: WAL allows it)."""
    path = ws.state_dir / "inbox.sqlite"
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM done").fetchone()[0]
    except sqlite3.Error:
        return 0
    finally:
        db.close()


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun_acts_exactly_once_and_loses_nothing(ws, runner, imap, sent) -> None:
    add_people(ws, [(f"q{i}@example.org", "", "active") for i in range(40)])
    more = send_issue_to_outbox(ws, runner, "2027-01-impuls", subject="Impuls im Januar")
    mails, expected = _mixed_mailbox(ws, more, 500)
    imap.append(*mails)
    total = sum(imap.folders().values())
    env = {**os.environ, "NEWSLETTER_WORKSPACE": str(ws.root)}
    rng = random.Random(11)
    for moment in sorted(rng.uniform(0.3, 3.0) for _ in range(8)):
        process = subprocess.Popen([sys.executable, "-m", "newsletter", "inbox"], cwd=ws.root, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:  # the crash: at an arbitrary moment of the run (fetching, acting, moving, remembering)
            process.wait(timeout=moment)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
        _wait_until_gone(process.pid)  # its sorting helper ends with it
        if _done(ws) == 500:
            break
    final = subprocess.run([sys.executable, "-m", "newsletter", "inbox", "--json"], cwd=ws.root, env=env,
                           capture_output=True, text=True, timeout=300, check=False)
    assert final.returncode == 0, final.stderr
    assert sum(imap.folders().values()) == total  # not one mail deleted
    people = {p.email: p.status for p in SubscriberStore(ws.subscribers_path).load()}
    for address, wanted in expected.items():
        assert people[address] == wanted, address
    places = Counter()
    for mail in mails:
        places[_place(mail)] += 1
    folders = imap.folders()
    assert {name: folders.get(name, 0) for name in places} == dict(places)  # each mail in exactly one place
    hard = {a for a in more if any(_place(m) == "Newsletter/Unzustellbar" and b"5.1.1" in m and
                                   f"Final-Recipient: rfc822; {a}\r".encode() in m for m in mails)}
    soft = {a for a in more if a not in hard and any(_place(m) == "Newsletter/Unzustellbar" and b"4.2.2" in m and
                                                     f"Final-Recipient: rfc822; {a}\r".encode() in m for m in mails)}
    with SendJournal(journal_path(ws.journal_dir, "2027-01-impuls")) as journal:
        assert journal.bounce_counts() == {"hard": len(hard), "soft": len(soft), "policy": 0}


def _wait_until_gone(group: int) -> None:
    """Every process of this process group has ended (within 10 s), else the test fails."""
    deadline = time.monotonic() + 10
    while True:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, "a process of the killed inbox is still running"
        time.sleep(0.05)


SORTER_CHECK = r"""
import os, pickle, sys
from newsletter.sorting import Sorter, sort_here
ours, chunks = pickle.load(open(sys.argv[1], "rb"))
with Sorter(ours, expected=151, helpers=2) as sorter:
    helpers = [process for process, _ in sorter._idle]
    assert len(helpers) == 2 and os.getpid() not in [h.pid for h in helpers], "no helper processes"
    sorter.submit(chunks[0])
    sorter.submit(chunks[1])
    assert sorter.full, "two helpers, two chunks: full"
    first = sorter.take()
    sorter.submit(chunks[2])
    results = {**first, **sorter.take(), **sorter.take()}
    assert not sorter.busy
assert not any(h.is_alive() for h in helpers), "a helper outlived the sorter"
assert list(first) == list(chunks[0]), "the oldest chunk comes back first"
assert results == {uid: r for chunk in chunks for uid, r in sort_here(chunk, ours).items()}, "other results"
assert len(results) == 151
with Sorter(ours, expected=3) as few:
    assert few._idle == [], "a process for three mails"
    few.submit(chunks[2])
    assert few.take() == sort_here(chunks[2], ours)
print("ok")
"""


def test_the_sorting_helper_sorts_as_this_process_does_and_ends_with_it(ws, runner, imap, sent, tmp_path) -> None:
    """With many mails they are sorted in a forked helper while the next ones are fetched: the
    same results, broken MIME included, and the helper is gone when the command ends. In a fresh
    process, as the command runs (the helper is forked only where no other thread runs)."""
    import pickle

    from newsletter.inbox import SentMail

    mails, _ = _mixed_mailbox(ws, sent, 150)
    chunks = [dict(enumerate(mails[:60])), {n + 60: m for n, m in enumerate(mails[60:120])},
              {n + 120: m for n, m in enumerate([*mails[120:], broken_mime()])}]
    (tmp_path / "mails.pickle").write_bytes(pickle.dumps((SentMail(ws).ours, chunks)))
    result = subprocess.run([sys.executable, "-c", SORTER_CHECK, str(tmp_path / "mails.pickle")],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def _place(mail: bytes) -> str:
    if b"report-type=delivery-status" in mail:
        return "Newsletter/Unzustellbar"
    if b"feedback-report" in mail:
        return "Newsletter/Beschwerden"
    if b"Subject: Abmelden " in mail:
        return "Newsletter/Abmeldungen"
    if b"Abwesenheitsnotiz" in mail:
        return "Newsletter/Abwesenheit"
    return "INBOX"


def test_password_comes_from_password_command(ws, runner, imap, sent, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NEWSLETTER_IMAP_PASSWORD")
    config = ws.root / "newsletter.toml"
    config.write_text(config.read_text() + f'password_command = "echo {PASSWORD}"\n')
    assert invoke(runner, "inbox").exit_code == 0


# -- before every send ------------------------------------------------------------------------------


def test_send_reads_the_mailbox_first_so_who_bounced_is_not_mailed_again(ws, runner, imap, sent) -> None:
    imap.append(postfix_dsn("p1@example.org", sent["p1@example.org"]),
                arf_complaint("p2@example.org", sent["p2@example.org"]))
    path = write_issue(ws, "2027-01-impuls", "Ein neuer Text.\n", subject="Impuls im Januar")
    result = invoke(runner, "send", str(path), "--yes")
    assert result.exit_code == 0, result.output
    assert "Postfach" in result.stdout and "1 unzustellbar, 1 Beschwerde(n)" in result.stdout
    with SendJournal(journal_path(ws.journal_dir, "2027-01-impuls")) as journal:
        frozen = {row.email for row in journal.rows(["sent"])}
    assert frozen == {p[0] for p in PEOPLE} - {"p1@example.org", "p2@example.org"}


def test_send_skip_inbox_leaves_the_mailbox_alone(ws, runner, imap, sent) -> None:
    imap.append(postfix_dsn("p1@example.org", sent["p1@example.org"]))
    path = write_issue(ws, "2027-01-impuls", "Ein neuer Text.\n", subject="Impuls im Januar")
    assert invoke(runner, "send", str(path), "--yes", "--skip-inbox").exit_code == 0
    assert status(ws, "p1@example.org") == "active" and imap.folders() == {"INBOX": 1}


def test_an_unreachable_mailbox_is_a_warning_not_a_silent_skip(ws, runner, imap, sent, ca) -> None:
    imap_config(ws, imap, ca, port=1)  # nothing listens there
    path = write_issue(ws, "2027-01-impuls", "Ein neuer Text.\n", subject="Impuls im Januar")
    result = invoke(runner, "send", str(path), "--yes")
    assert result.exit_code == 0, result.output
    assert "nicht gelesen: 127.0.0.1:1: keine Verbindung" in result.stdout


# -- a real bounce: Postfix accepts, fails to deliver, and mails its DSN into her mailbox -----------


@pytest.mark.skipif(not postfix_available(), reason="needs Debian's postfix")
def test_a_real_postfix_bounce_is_matched_by_its_envelope_id(ws, runner, imap, ca, monkeypatch) -> None:
    people = [("anna@leser.example", "Anna", "active"), ("gibtsnicht@leser.example", "", "active"),
              ("auchnicht@leser.example", "", "active")]
    add_people(ws, people)
    postfix = PostfixServer(imap.root / "postfix", imap.root / "mail",
                            {"impuls@praxis.example.org": f"{USER}/", "anna@leser.example": "anna/"}).start()
    try:
        smtp_config(ws, postfix.port)
        imap_config(ws, imap, ca)
        monkeypatch.setenv("NEWSLETTER_IMAP_PASSWORD", PASSWORD)
        path = write_issue(ws, "2026-12-impuls", "Hallo,\n\nein Text.\n", subject="Impuls im Dezember")
        result = invoke(runner, "send", str(path), "--yes", "--skip-inbox")
        assert result.exit_code == 0, result.output  # the submission server took everyone
        deadline = time.monotonic() + 60
        while len(list((imap.maildir / "new").glob("*"))) < 2:  # the two DSNs arrive a moment later
            assert time.monotonic() < deadline, (imap.root / "postfix" / "postfix.log").read_text()
            time.sleep(0.05)
        dsn = next((imap.maildir / "new").iterdir()).read_bytes()
        assert b"Original-Envelope-Id: 2026-12-impuls." in dsn  # the send asked for it (RFC 3461)
        report = json.loads(invoke(runner, "inbox", "--json").stdout)
    finally:
        postfix.stop()
    assert report["counts"]["bounced"] == 2
    assert {status(ws, p[0]) for p in people[1:]} == {"bounced"} and status(ws, "anna@leser.example") == "active"
    assert imap.folders()["Newsletter/Unzustellbar"] == 2
