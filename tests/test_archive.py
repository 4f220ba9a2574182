"""newsletter archive: what reached readers only, no personal data, a valid feed, identical bytes on rebuild."""

from __future__ import annotations

import email
import email.policy
import json
import re
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import invoke, write_issue
from smtp_server import Mailbox, SmtpServer, free_port
from test_send import _send_process, _wait_for, add_people, smtp_config

from newsletter.archive import build_archive, page_url
from newsletter.issue import parse_issue
from newsletter.journal import SendJournal, journal_path
from newsletter.subscribers import SubscriberStore
from newsletter.tokens import make_token
from newsletter.workspace import Workspace

ATOM = "{http://www.w3.org/2005/Atom}"
PEOPLE = [("anna.vertraulich@example.org", "Anna Geheimnis", "active"),
          ("bert.privat@example.org", "Bert Verborgen", "active")]


@pytest.fixture
def sent(ws: Workspace, runner) -> Workspace:
    """Three sent issues, one sent with archive = false, and one unsent draft."""
    add_people(ws, PEOPLE)
    for month, title in (("2026-10", "Oktober"), ("2026-11", "November"), ("2026-12", "Dezember")):
        write_issue(ws, f"{month}-impuls", f'Hallo {{{{ first_name | default("du") }}}}, {{{{ email }}}}!\n\n'
                    f"Gedanken im {title}.\n", subject=f"Impuls im {title}", date=f"{month}-01",
                    preheader=f"Vorschau {title}")
        assert invoke(runner, "send", f"issues/{month}-impuls.md", "--yes").exit_code == 0
    write_issue(ws, "2026-12-privat", "Nur für die Liste.\n", subject="Nicht archiviert", archive=False)
    assert invoke(runner, "send", "issues/2026-12-privat.md", "--yes").exit_code == 0
    write_issue(ws, "2027-01-entwurf", "Noch nicht fertig.\n", subject="Entwurf Januar")
    return ws


def test_archive_holds_sent_issues_only(sent: Workspace, runner, tmp_path: Path) -> None:
    result = invoke(runner, "archive", "--out", str(tmp_path / "site"))
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "site").iterdir() if not p.name.startswith("."))
    assert names == ["2026-10-impuls.html", "2026-11-impuls.html", "2026-12-impuls.html", "feed.xml", "index.html"]
    index = (tmp_path / "site" / "index.html").read_text()
    assert "Entwurf Januar" not in index and "Nicht archiviert" not in index
    assert index.index("Impuls im Dezember") < index.index("Impuls im November") < index.index("Impuls im Oktober")
    assert "Dezember 2026" in index and "Vorschau Dezember" in index
    assert 'href="https://newsletter.praxis.example.org/subscribe"' in index
    page = (tmp_path / "site" / "2026-12-impuls.html").read_text()
    assert page.lower().startswith("<!doctype html>")
    assert "Hallo du, !" in page
    assert 'href="index.html"' in page and "/subscribe" in page
    assert "Newsletter abbestellen" not in page and "/u/" not in page


def test_archive_contains_no_personal_data(sent: Workspace, tmp_path: Path) -> None:
    build_archive(sent, tmp_path / "site")
    output = b"".join(p.read_bytes() for p in (tmp_path / "site").iterdir())
    secret = sent.secret()
    for person in SubscriberStore(sent.subscribers_path).load():
        for value in (person.email, person.name, person.id, *person.name.split(), make_token(secret, person.id)):
            assert value.encode() not in output, value
    assert b"NLSLOT" not in output


def test_feed_is_valid_atom(sent: Workspace, tmp_path: Path) -> None:
    build_archive(sent, tmp_path / "site")
    feed = ET.parse(tmp_path / "site" / "feed.xml").getroot()  # noqa: S314 - our own output
    assert feed.tag == f"{ATOM}feed"
    for tag in ("id", "title", "updated", "author"):
        assert feed.find(f"{ATOM}{tag}") is not None, tag
    self_link = [link for link in feed.findall(f"{ATOM}link") if link.get("rel") == "self"]
    assert self_link[0].get("href") == "https://newsletter.praxis.example.org/archiv/feed.xml"
    entries = feed.findall(f"{ATOM}entry")
    assert [e.findtext(f"{ATOM}title") for e in entries] == ["Impuls im Dezember", "Impuls im November",
                                                             "Impuls im Oktober"]
    for entry in entries:
        assert re.fullmatch(r"https://newsletter\.praxis\.example\.org/archiv/2026-\d\d-impuls\.html",
                            entry.findtext(f"{ATOM}id"))
        slug = entry.findtext(f"{ATOM}id").rsplit("/", 1)[1].removesuffix(".html")
        assert entry.findtext(f"{ATOM}published") == _first_sent(sent, slug)  # when it reached readers
        assert entry.findtext(f"{ATOM}updated") == entry.findtext(f"{ATOM}published")
        assert entry.find(f"{ATOM}link").get("href") == entry.findtext(f"{ATOM}id")
    assert feed.findtext(f"{ATOM}updated") == max(e.findtext(f"{ATOM}published") for e in entries)


def _first_sent(ws: Workspace, slug: str) -> str:
    """The journal's first sent_at as Atom writes it."""
    journal = SendJournal(journal_path(ws.journal_dir, slug))
    try:
        return journal.first_sent_at().replace("+00:00", "Z")
    finally:
        journal.close()


def test_second_build_is_byte_identical(sent: Workspace, tmp_path: Path) -> None:
    first = build_archive(sent, tmp_path / "site")
    before = {p.name: p.read_bytes() for p in (tmp_path / "site").iterdir()}
    second = build_archive(sent, tmp_path / "site")
    assert {p.name: p.read_bytes() for p in (tmp_path / "site").iterdir()} == before
    assert len(first.written) == 5 and second.written == [] and len(second.unchanged) == 5
    other = build_archive(sent, tmp_path / "elsewhere")
    assert {p.name: p.read_bytes() for p in other.folder.iterdir()} == before


def test_opting_out_later_removes_the_page(sent: Workspace, tmp_path: Path) -> None:
    build_archive(sent, tmp_path / "site")
    path = sent.issues_dir / "2026-11-impuls.md"
    path.write_text(path.read_text().replace('date = "2026-11-01"', 'date = "2026-11-01"\narchive = false'))
    result = build_archive(sent, tmp_path / "site")
    assert not (tmp_path / "site" / "2026-11-impuls.html").exists()
    assert [p.name for p in result.removed] == ["2026-11-impuls.html"]


def test_web_version_link_in_mail_is_the_archive_page(sent: Workspace) -> None:
    outbox = sent.outbox_dir / "2026-12-impuls"
    message = email.message_from_bytes((outbox / "anna.vertraulich@example.org.eml").read_bytes(),
                                       policy=email.policy.default)
    url = page_url(sent, parse_issue(sent.issues_dir / "2026-12-impuls.md"))
    assert url == "https://newsletter.praxis.example.org/archiv/2026-12-impuls.html"
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert f'href="{url}"' in html
    assert f"Im Browser ansehen: {url}" in text


def test_archive_false_mail_has_no_web_link(ws: Workspace, runner) -> None:
    add_people(ws, PEOPLE[:1])
    write_issue(ws, "2026-12-privat", "Nur für die Liste.\n", archive=False)
    assert invoke(runner, "send", "issues/2026-12-privat.md", "--yes").exit_code == 0
    raw = (ws.outbox_dir / "2026-12-privat" / "anna.vertraulich@example.org.eml").read_bytes()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert "/archiv/" not in message.get_body(("html",)).get_content()
    assert "Im Browser ansehen" not in message.get_body(("plain",)).get_content()


def test_forget_erases_the_person_from_journals_and_outbox(sent: Workspace, runner) -> None:
    result = invoke(runner, "subscribers", "forget", "anna.vertraulich@example.org", "--yes")
    assert result.exit_code == 0, result.output
    assert "4 Versandprotokoll-Zeile(n)" in result.stdout
    leftovers = [p for p in sent.state_dir.rglob("*") if p.is_file()]
    for path in leftovers:
        data = path.read_bytes()
        assert b"anna.vertraulich" not in data and b"Geheimnis" not in data, path
    counts = json.loads(invoke(runner, "status", "issues/2026-12-impuls.md", "--json").stdout)
    assert counts["sent"] == 2  # the rows stay, so nothing is ever resent


def test_a_changed_template_or_issue_renders_the_pages_again(sent: Workspace, tmp_path: Path) -> None:
    build_archive(sent, tmp_path / "site")
    path = sent.issues_dir / "2026-11-impuls.md"
    path.write_text(path.read_text().replace("Gedanken im November.", "Neue Gedanken im November."))
    result = build_archive(sent, tmp_path / "site")
    assert [p.name for p in result.written] == ["2026-11-impuls.html"]
    assert "Neue Gedanken" in (tmp_path / "site" / "2026-11-impuls.html").read_text()
    template = sent.templates_dir / "newsletter.mjml"
    template.write_text(template.read_text().replace("#f4f1ec", "#f5f2ed"))
    result = build_archive(sent, tmp_path / "site")
    assert sorted(p.name for p in result.written) == ["2026-10-impuls.html", "2026-11-impuls.html",
                                                      "2026-12-impuls.html"]
    assert "#f5f2ed" in (tmp_path / "site" / "2026-10-impuls.html").read_text()


def _listed(folder: Path) -> list[str]:
    index = (folder / "index.html").read_text()
    return re.findall(r'<li><a href="([^"]+)\.html">', index)


def test_a_send_that_delivered_nothing_leaves_the_archive_as_it_was(sent: Workspace, runner) -> None:
    folder = sent.state_dir / "archive"
    before = {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}
    assert {"index.html", "feed.xml"} <= set(before)
    write_issue(sent, "2027-01-neu", "Ein neuer Monat.\n", subject="Impuls im Januar", date="2027-01-01")
    smtp_config(sent, free_port())  # nothing listens there
    result = invoke(runner, "send", "issues/2027-01-neu.md", "--yes")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (folder / "index.html").read_bytes() == before["index.html"]
    assert (folder / "feed.xml").read_bytes() == before["feed.xml"]
    assert {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")} == before
    assert invoke(runner, "archive").exit_code == 0  # a rebuild does not list it either
    assert "2027-01-neu" not in _listed(folder) and not (folder / "2027-01-neu.html").exists()


def test_after_a_real_send_the_issue_is_listed_first(sent: Workspace, runner) -> None:
    mailbox = Mailbox()
    server = SmtpServer(mailbox).start()
    try:
        smtp_config(sent, server.port)
        write_issue(sent, "2027-01-neu", "Ein neuer Monat.\n", subject="Impuls im Januar", date="2027-01-01")
        result = invoke(runner, "send", "issues/2027-01-neu.md", "--yes")
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    assert len(mailbox.received) == 2
    folder = sent.state_dir / "archive"
    assert _listed(folder) == ["2027-01-neu", "2026-12-impuls", "2026-11-impuls", "2026-10-impuls"]
    assert "Impuls im Januar" in (folder / "2027-01-neu.html").read_text()
    feed = ET.parse(folder / "feed.xml").getroot()  # noqa: S314 - our own output
    assert feed.find(f"{ATOM}entry").findtext(f"{ATOM}title") == "Impuls im Januar"


def test_the_archive_is_ordered_by_the_first_message_sent(sent: Workspace, tmp_path: Path) -> None:
    db = sqlite3.connect(journal_path(sent.journal_dir, "2026-10-impuls"))
    with db:  # October's issue went out last, say after a late correction
        db.execute("UPDATE recipients SET sent_at = '2027-01-05T09:30:00+00:00' WHERE state = 'sent'")
    db.close()
    build_archive(sent, tmp_path / "site")
    assert _listed(tmp_path / "site") == ["2026-10-impuls", "2026-12-impuls", "2026-11-impuls"]
    feed = ET.parse(tmp_path / "site" / "feed.xml").getroot()  # noqa: S314 - our own output
    first = feed.find(f"{ATOM}entry")
    assert first.findtext(f"{ATOM}title") == "Impuls im Oktober"
    assert first.findtext(f"{ATOM}published") == "2027-01-05T09:30:00Z"
    assert feed.findtext(f"{ATOM}updated") == "2027-01-05T09:30:00Z"


def test_the_page_is_there_for_the_first_mail_and_listed_after_it(ws: Workspace) -> None:
    """While a send runs, the page its mails link to exists; the index lists it once one went out."""
    add_people(ws, [(f"p{i}@example.org", "", "active") for i in range(3)])
    mailbox = Mailbox(delay=1.0)
    server = SmtpServer(mailbox).start()
    try:
        smtp_config(ws, server.port)
        write_issue(ws, "2026-12-impuls", "Gedanken im Dezember.\n")
        process = _send_process(ws)
        try:
            _wait_for(mailbox, 1)
            folder = ws.state_dir / "archive"
            assert (folder / "2026-12-impuls.html").is_file()
            assert _listed(folder) == []
        finally:
            assert process.wait(timeout=60) == 0, process.communicate()
    finally:
        server.stop()
    assert _listed(ws.state_dir / "archive") == ["2026-12-impuls"]
