"""newsletter send against a real SMTP server on loopback: the bytes, the faults, the journal."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from email.header import decode_header, make_header

import pytest
import trustme
from conftest import invoke, write_issue
from send_support import add_people, journal_counts, smtp_config
from smtp_server import Mailbox, SmtpServer

from newsletter import journal as journal_module
from newsletter.issue import parse_issue
from newsletter.journal import SendJournal, journal_path
from newsletter.merge import recipient_values
from newsletter.render import render_issue
from newsletter.subscribers import SubscriberStore
from newsletter.tokens import unsubscribe_subject, unsubscribe_url, verify_token
from newsletter.workspace import Workspace

PEOPLE = [
    ("anna@example.org", "Anna Müller", "active"),
    ("ben@example.org", "", "active"),
    ("chloe@example.org", 'Chloé "Cleo" Dubois, Jr.', "active"),
    ("dora@example.org", "<script>alert(1)</script>\nDora", "active"),
    ("erik@example.org", "Erik Neu", "pending"),
    ("fritz@example.org", "Fritz Fort", "unsubscribed"),
]


def test_each_active_subscriber_gets_one_correct_message(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, PEOPLE)
    smtp_config(ws, smtp.port)
    result = invoke(runner, "send", str(issue), "--yes")
    assert result.exit_code == 0, result.output
    assert "Fertig" in result.stdout and "gesendet" in result.stdout
    people = {s.email: s for s in SubscriberStore(ws.subscribers_path).load()}
    rendered = render_issue(ws, parse_issue(issue))
    assert sorted(r.rcpt_to[0] for r in mailbox.received) == sorted(
        ["anna@example.org", "ben@example.org", "chloe@example.org", "dora@example.org"])
    message_ids, tokens = set(), set()
    for received in mailbox.received:
        raw, msg = received.data, received.message
        person = people[received.rcpt_to[0]]
        assert received.mail_from == "impuls@praxis.example.org"
        assert raw.isascii()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert all(len(line) <= 76 for line in body.split(b"\r\n"))
        assert b"\nFrom: Mira Sommerfeld <impuls@praxis.example.org>\r\n" in b"\n" + head
        assert msg["Subject"] == "Impuls: Größe – „Nähe“ im Dezember"
        assert msg["To"].addresses[0].addr_spec == person.email
        assert msg["To"].addresses[0].display_name == " ".join(person.name.split())
        assert msg["Reply-To"] == "kontakt@praxis.example.org"
        assert msg["Date"].datetime.tzinfo is not None
        assert msg["List-Id"] == '"Impuls" <newsletter.praxis.example.org>'
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url = unsubscribe_url("https://newsletter.praxis.example.org", ws.secret(), person.id)
        line = next(h for h in head.split(b"\r\n") if h.startswith(b"List-Unsubscribe:"))
        token = url.rsplit("/", 1)[1]
        assert line == (f"List-Unsubscribe: <{url}>, <mailto:impuls@praxis.example.org?subject=Abmelden%20{token}>"
                        .encode())
        token = url.rsplit("/", 1)[1]
        assert verify_token(ws.secret(), token) == person.id
        tokens.add(token)
        assert re.fullmatch(r"<[^@<>]+@praxis\.example\.org>", msg["Message-ID"])
        message_ids.add(msg["Message-ID"])
        assert msg.get_content_type() == "multipart/alternative"
        parts = [part.get_content_type() for part in msg.iter_parts()]
        assert parts == ["text/plain", "text/html"]
        html, text = rendered.personalize(recipient_values(person.email, person.name, url,
                                                           unsubscribe_subject(ws.secret(), person.id)))
        assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == text
        assert msg.get_body(("html",)).get_content().replace("\r\n", "\n") == html
    assert len(message_ids) == len(tokens) == 4
    dora = next(r for r in mailbox.received if r.rcpt_to[0] == "dora@example.org").message
    assert "Hallo &lt;script&gt;alert(1)&lt;/script&gt;," in dora.get_body(("html",)).get_content()
    assert "<script>alert" not in dora.get_body(("html",)).get_content()


def test_second_send_of_a_complete_issue_sends_nothing(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, PEOPLE[:2])
    smtp_config(ws, smtp.port)
    assert invoke(runner, "send", str(issue), "--yes").exit_code == 0
    again = invoke(runner, "send", str(issue), "--yes")
    assert again.exit_code == 0
    assert "bereits vollständig versendet" in again.stdout
    assert len(mailbox.received) == 2


def test_connection_dropped_every_two_messages_is_reopened(ws, runner, smtp, mailbox, issue) -> None:
    people = [(f"p{i}@example.org", f"Person {i}", "active") for i in range(7)]
    add_people(ws, people)
    smtp_config(ws, smtp.port)
    mailbox.drop_every = 2
    result = invoke(runner, "send", str(issue), "--yes")
    assert result.exit_code == 0, result.output
    assert Counter(r.rcpt_to[0] for r in mailbox.received) == {p[0]: 1 for p in people}
    assert mailbox.connections >= 4
    assert journal_counts(ws)["sent"] == 7


def test_421_451_retried_and_550_marks_bounced(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, [(f"p{i}@example.org", "", "active") for i in range(4)])
    smtp_config(ws, smtp.port)
    mailbox.rcpt_replies_once["p0@example.org"] = "421 4.3.0 Service shutting down"
    mailbox.rcpt_replies_once["p1@example.org"] = "451 4.3.0 Greylisted, come back later"
    mailbox.rcpt_replies["p2@example.org"] = "550 5.1.1 <p2@example.org>: No such user"
    result = invoke(runner, "send", str(issue), "--yes")
    assert result.exit_code == 5, result.output  # one recipient failed: not "Fertig"
    assert Counter(r.rcpt_to[0] for r in mailbox.received) == {
        "p0@example.org": 1, "p1@example.org": 1, "p3@example.org": 1}
    counts = journal_counts(ws)
    assert (counts["sent"], counts["failed"]) == (3, 1)
    assert SubscriberStore(ws.subscribers_path).load().get("p2@example.org").status == "bounced"  # the file itself
    assert "als unzustellbar markiert: p2@example.org" in result.stdout
    status = json.loads(invoke(runner, "status", str(issue), "--json", "--failed").stdout)
    assert {k: status[k] for k in ("total", "sent", "pending", "deferred", "failed", "unknown")} == {
        "total": 4, "sent": 3, "pending": 0, "deferred": 0, "failed": 1, "unknown": 0}
    assert status["problems"][0]["email"] == "p2@example.org" and status["problems"][0]["code"] == 550


def test_temporary_failures_stay_deferred_for_the_next_run(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, [("a@example.org", "", "active"), ("b@example.org", "", "active")])
    smtp_config(ws, smtp.port, retry_delay=3600)
    mailbox.rcpt_replies["b@example.org"] = "450 4.2.1 Mailbox busy"
    result = invoke(runner, "send", str(issue), "--yes")
    assert result.exit_code == 4
    assert "zurückgestellt" in result.stdout
    assert journal_counts(ws)["deferred"] == 1
    db = sqlite3.connect(journal_path(ws.journal_dir, "2026-12-impuls"))
    db.execute("UPDATE recipients SET next_attempt_at = 0")  # time passes
    db.commit()
    db.close()
    del mailbox.rcpt_replies["b@example.org"]
    assert invoke(runner, "send", str(issue), "--yes").exit_code == 0
    assert Counter(r.rcpt_to[0] for r in mailbox.received) == {"a@example.org": 1, "b@example.org": 1}


def test_provider_hourly_cap_pauses_instead_of_burning_the_list(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, [(f"p{i}@example.org", "", "active") for i in range(5)])
    smtp_config(ws, smtp.port, limit_pause=0.05)
    mailbox.mail_reply = "451 4.7.0 Rate limit exceeded, try again later"
    result = invoke(runner, "send", str(issue), "--yes")
    assert result.exit_code == 3, result.output
    assert "Vom Server angehalten" in result.stdout and "„451 4.7.0 Rate limit exceeded" in result.stdout
    counts = journal_counts(ws)
    assert counts["pending"] == 5 and counts["failed"] == counts["deferred"] == 0
    mailbox.mail_reply = None
    assert invoke(runner, "send", str(issue), "--yes").exit_code == 0
    assert len(mailbox.received) == 5


def test_refused_login_stops_at_once(ws, runner, mailbox, issue, monkeypatch) -> None:
    server = SmtpServer(mailbox, users={"mira": "richtig"}).start()
    try:
        add_people(ws, [("a@example.org", "", "active"), ("b@example.org", "", "active")])
        smtp_config(ws, server.port, username="mira")
        monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "falsch")
        result = invoke(runner, "send", str(issue), "--yes")
        assert result.exit_code == 1
        assert result.stderr.startswith(f"Fehler: 127.0.0.1:{server.port}: Anmeldung abgelehnt (535")
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
        assert mailbox.received == []
        monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "richtig")
        assert invoke(runner, "send", str(issue), "--yes").exit_code == 0
        assert len(mailbox.received) == 2
    finally:
        server.stop()


def test_refused_sender_stops_at_once(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, [("a@example.org", "", "active"), ("b@example.org", "", "active")])
    smtp_config(ws, smtp.port)
    mailbox.mail_reply = "553 5.7.1 Sender address rejected: not owned by user"
    result = invoke(runner, "send", str(issue), "--yes")
    assert result.exit_code == 1
    assert f"127.0.0.1:{smtp.port}: Absender impuls@praxis.example.org abgelehnt (553" in result.stderr
    assert journal_counts(ws)["pending"] == 2


def test_missing_password_is_one_clear_line(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, [("a@example.org", "", "active")])
    smtp_config(ws, smtp.port, username="mira")
    result = invoke(runner, "send", str(issue), "--yes")
    assert result.exit_code == 1
    assert "SMTP-Passwort fehlt" in result.stderr and "NEWSLETTER_SMTP_PASSWORD" in result.stderr
    assert not journal_path(ws.journal_dir, "2026-12-impuls").exists()
    assert mailbox.received == []


def test_password_command_is_asked_once(ws, runner, mailbox, issue, tmp_path) -> None:
    server = SmtpServer(mailbox, users={"mira": "aus-dem-schluesselbund"}).start()
    asked = tmp_path / "asked"
    try:
        add_people(ws, [(f"p{i}@example.org", "", "active") for i in range(4)])
        smtp_config(ws, server.port, username="mira", connections=2,
                    password_command=f"echo gefragt >> {asked}; echo aus-dem-schluesselbund")
        assert invoke(runner, "send", str(issue), "--yes").exit_code == 0
        assert len(mailbox.received) == 4
        assert asked.read_text() == "gefragt\n"  # a keyring prompt would appear once, not per connection
    finally:
        server.stop()


def test_missing_starttls_aborts(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, [("a@example.org", "", "active")])
    smtp_config(ws, smtp.port, security="starttls")
    result = invoke(runner, "send", str(issue), "--yes")
    assert result.exit_code == 1
    assert f"127.0.0.1:{smtp.port}: der Server bietet kein STARTTLS an" in result.stderr
    assert mailbox.received == []


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_untrusted_certificate_refused_and_accepted_with_ca_file(ws, runner, mailbox, issue, ca, security,
                                                                 tmp_path) -> None:
    server_context = __import__("ssl").create_default_context(__import__("ssl").Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    server = SmtpServer(mailbox, tls=server_context, implicit_tls=security == "ssl").start()
    try:
        add_people(ws, [("a@example.org", "", "active")])
        config = ws.root / "newsletter.toml"
        plain = config.read_text()
        smtp_config(ws, server.port, security=security)
        result = invoke(runner, "send", str(issue), "--yes")
        assert result.exit_code == 1
        assert f"127.0.0.1:{server.port}: TLS-Zertifikat nicht vertrauenswürdig" in result.stderr
        assert mailbox.received == []
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        config.write_text(plain)
        smtp_config(ws, server.port, security=security, tls_ca_file=str(tmp_path / "ca.pem"))
        result = invoke(runner, "send", str(issue), "--yes")
        assert result.exit_code == 0, result.output
        assert len(mailbox.received) == 1
    finally:
        server.stop()


def test_several_connections_deliver_each_message_once(ws, runner, smtp, mailbox, issue) -> None:
    people = [(f"p{i}@example.org", f"Person {i}", "active") for i in range(30)]
    add_people(ws, people)
    smtp_config(ws, smtp.port, connections=3)
    mailbox.delay = 0.005  # slow enough that every worker gets rows; how many is up to the scheduler
    assert invoke(runner, "send", str(issue), "--yes").exit_code == 0
    assert Counter(r.rcpt_to[0] for r in mailbox.received) == {p[0]: 1 for p in people}
    assert 1 <= mailbox.connections <= 3


def test_no_subscribers_is_a_clear_error(ws, runner, issue) -> None:
    result = invoke(runner, "send", str(issue), "--yes")
    assert result.exit_code == 1
    assert "keine aktiven, bestätigten Abonnent:innen" in result.stderr


def test_issue_failing_check_is_not_sent(ws, runner, smtp, mailbox) -> None:
    add_people(ws, [("a@example.org", "", "active")])
    smtp_config(ws, smtp.port)
    bad = write_issue(ws, "2026-12-bad", "Hallo {{ vorname }}\n")
    result = invoke(runner, "send", str(bad), "--yes")
    assert result.exit_code == 1
    assert "check" in result.stderr and "vorname" in result.stderr
    assert mailbox.received == []


def test_without_terminal_and_without_yes_nothing_is_sent(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, [("a@example.org", "", "active")])
    smtp_config(ws, smtp.port)
    result = invoke(runner, "send", str(issue))
    assert result.exit_code == 1
    assert "--yes" in result.stderr
    assert mailbox.received == []
    assert not journal_path(ws.journal_dir, "2026-12-impuls").exists()


def test_test_copy_goes_only_to_the_given_address(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, [("a@example.org", "Anna", "active")])
    smtp_config(ws, smtp.port)
    result = invoke(runner, "send", str(issue), "--test", "mira@example.org", "--test", "zweite@example.org")
    assert result.exit_code == 0, result.output
    assert [r.rcpt_to for r in mailbox.received] == [["mira@example.org"], ["zweite@example.org"]]
    msg = mailbox.received[0].message
    assert msg["Subject"] == "[TEST] Impuls: Größe – „Nähe“ im Dezember"
    assert "Hallo Alex," in msg.get_body(("plain",)).get_content()
    assert not journal_path(ws.journal_dir, "2026-12-impuls").exists()
    page = f"{ws.config.base_url}/archiv/2026-12-impuls.html"
    assert f"Im Browser ansehen: {page}" in msg.get_body(("plain",)).get_content()  # where it will be
    assert f"führt zu {page}; die Seite ist noch nicht online, sie erscheint erst mit dem Versand" in result.stdout


def test_dry_run_builds_everything_logs_in_and_sends_nothing(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, PEOPLE)
    smtp_config(ws, smtp.port)
    result = invoke(runner, "send", str(issue), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "4 Nachrichten gebaut und geprüft; Verbindung und Anmeldung bei SMTP 127.0.0.1" in result.stdout
    assert mailbox.received == [] and mailbox.connections == 1  # connected, said EHLO, quit: no MAIL FROM
    assert not journal_path(ws.journal_dir, "2026-12-impuls").exists()
    offline = invoke(runner, "send", str(issue), "--dry-run", "--offline")
    assert offline.exit_code == 0 and "4 Nachrichten gebaut und geprüft, nichts gesendet" in offline.stdout
    assert mailbox.connections == 1


def test_outbox_is_the_default_and_says_so(ws, runner, issue) -> None:
    add_people(ws, PEOPLE)
    result = invoke(runner, "send", str(issue), "--yes")
    assert result.exit_code == 0
    assert "Postausgang" in result.stdout
    files = sorted((ws.outbox_dir / "2026-12-impuls").glob("*.eml"))
    assert len(files) == 4
    assert all(f.read_bytes().isascii() for f in files)


@pytest.mark.parametrize("boot", ["known", "unknown"])
def test_the_journal_waits_for_the_disk_before_the_server_can_accept(ws, runner, smtp, mailbox, issue,
                                                                     monkeypatch, boot) -> None:
    """When the final "." arrives, the message's row is `sending`, reserved by a commit that waited
    for the disk: where the boot is known, one batch for all four (noting the boot); elsewhere
    the next row's reservation, which also made this `sending` durable."""
    if boot == "unknown":
        monkeypatch.setattr(journal_module, "boot_id", lambda: "")
    add_people(ws, [(f"p{i}@example.org", "", "active") for i in range(4)])
    smtp_config(ws, smtp.port)
    path = journal_path(ws.journal_dir, "2026-12-impuls")
    seen: list[tuple[str, dict[str, str]]] = []
    original = mailbox.handle_DATA

    async def look_at_the_journal(server, session, envelope):
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            seen.append((envelope.rcpt_tos[0], dict(db.execute("SELECT email, state FROM recipients"))))
            seen[-1][1]["boot"] = db.execute("SELECT value FROM meta WHERE key = 'reserved_on_boot'").fetchone()[0]
        finally:
            db.close()
        return await original(server, session, envelope)

    mailbox.handle_DATA = look_at_the_journal
    assert invoke(runner, "send", str(issue), "--yes").exit_code == 0
    assert [address for address, _ in seen] == [f"p{i}@example.org" for i in range(4)]
    for i, (_, states) in enumerate(seen):
        if boot == "known":
            expected = ["sent"] * i + ["sending"] + ["reserved"] * (3 - i)
        else:
            expected = ["sent"] * i + ["sending"] + ["reserved"] * (i < 3) + ["pending"] * max(0, 2 - i)
        assert [states[f"p{n}@example.org"] for n in range(4)] == expected, i
        assert states["boot"] == journal_module.boot_id()
    assert journal_counts(ws)["sent"] == 4


def test_someone_who_unsubscribes_during_a_send_is_skipped(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, [(f"p{i}@example.org", "", "active") for i in range(3)])
    smtp_config(ws, smtp.port)
    store = SubscriberStore(ws.subscribers_path)
    original = mailbox.handle_DATA

    async def unsubscribe_p2_after_first(server, session, envelope):
        reply = await original(server, session, envelope)
        if len(mailbox.received) == 1:
            with store.change() as people:
                people.set_status(people.get("p2@example.org"), "unsubscribed")
        return reply

    mailbox.handle_DATA = unsubscribe_p2_after_first
    assert invoke(runner, "send", str(issue), "--yes").exit_code == 0
    assert sorted(r.rcpt_to[0] for r in mailbox.received) == ["p0@example.org", "p1@example.org"]
    assert journal_counts(ws)["skipped"] == 1


# -- real processes: kill -9 and Ctrl-C in the middle of a rate-limited run ----------------------


def _send_process(ws: Workspace) -> subprocess.Popen:
    env = {**os.environ, "NEWSLETTER_WORKSPACE": str(ws.root)}
    return subprocess.Popen([sys.executable, "-m", "newsletter", "send", "issues/2026-12-impuls.md", "--yes"],
                            cwd=ws.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(mailbox: Mailbox, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(mailbox.received) < count:
        assert time.monotonic() < deadline, "the send did not start"
        time.sleep(0.01)


@pytest.mark.parametrize("connections", [1, 2])
def test_kill_9_mid_send_then_resume_never_twice(ws, smtp, mailbox, issue, connections) -> None:
    people = [(f"p{i}@example.org", "", "active") for i in range(40)]
    add_people(ws, people)
    smtp_config(ws, smtp.port, rate_limit="40/second", connections=connections)
    mailbox.delay = 0.01
    for round_ in range(2):
        process = _send_process(ws)
        _wait_for(mailbox, 8 + 10 * round_)
        process.send_signal(signal.SIGKILL)
        process.wait()
    process = _send_process(ws)
    _, stderr = process.communicate(timeout=60)
    counts = journal_counts(ws)
    assert process.returncode == (5 if counts["unknown"] else 0), stderr.decode()
    assert counts["unknown"] <= 2 * connections
    assert counts["sent"] + counts["unknown"] == 40
    unknown = {r.email for r in SendJournal(journal_path(ws.journal_dir, "2026-12-impuls")).rows(["unknown"])}
    delivered = Counter(r.rcpt_to[0] for r in mailbox.received)
    for address, _, _ in people:
        if address in unknown:
            assert delivered[address] <= 1
        else:
            assert delivered[address] == 1, address


def test_daily_limit_stops_and_resumes_tomorrow(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, [(f"p{i}@example.org", "", "active") for i in range(5)])
    smtp_config(ws, smtp.port, daily_limit=2)
    result = invoke(runner, "send", str(issue), "--yes")
    assert result.exit_code == 4
    assert "Tageslimit erreicht" in result.stdout
    assert len(mailbox.received) == 2
    assert journal_counts(ws)["pending"] == 3
    db = sqlite3.connect(journal_path(ws.journal_dir, "2026-12-impuls"))
    assert db.execute("SELECT COUNT(*) FROM recipients WHERE state = 'reserved'").fetchone()[0] == 0  # given back
    db.close()
    again = invoke(runner, "send", str(issue), "--yes")
    assert "Tageslimit erreicht" in again.stdout and len(mailbox.received) == 2
    db = sqlite3.connect(journal_path(ws.journal_dir, "2026-12-impuls"))
    db.execute("UPDATE recipients SET sent_at = '2000-01-01T00:00:00+00:00' WHERE state = 'sent'")  # a day later
    db.commit()
    db.close()
    assert invoke(runner, "send", str(issue), "--yes").exit_code == 4  # one left for the day after
    assert len(mailbox.received) == 4


def _in_terminal(ws: Workspace, answer: bytes) -> tuple[int, str]:
    """Run `send` with a real pseudo-terminal and answer its question."""
    import pty

    main, child = pty.openpty()
    env = {**os.environ, "NEWSLETTER_WORKSPACE": str(ws.root), "COLUMNS": "100"}
    process = subprocess.Popen([sys.executable, "-m", "newsletter", "send", "issues/2026-12-impuls.md"],
                               cwd=ws.root, env=env, stdin=child, stdout=child, stderr=child)
    os.close(child)
    seen = b""
    deadline = time.monotonic() + 30
    while b"[j/N]" not in seen:
        assert time.monotonic() < deadline, seen.decode(errors="replace")
        seen += os.read(main, 4096)
    os.write(main, answer)
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(main)
    return process.wait(timeout=30), seen.decode(errors="replace")


def test_asks_before_sending_in_a_terminal(ws, smtp, mailbox, issue) -> None:
    add_people(ws, [("a@example.org", "", "active"), ("b@example.org", "", "active")])
    smtp_config(ws, smtp.port)
    code, shown = _in_terminal(ws, b"n\n")
    assert code == 0 and "An 2 Abonnent:innen senden?" in shown and "Nichts gesendet" in shown
    assert mailbox.received == []
    code, shown = _in_terminal(ws, b"j\n")
    assert code == 0 and "Fertig" in shown
    assert len(mailbox.received) == 2


# -- found in review: each of these once mailed someone wrongly or skipped people silently ------


def test_missing_subscriber_file_on_resume_stops_instead_of_skipping(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, [(f"p{i}@example.org", "", "active") for i in range(3)])
    smtp_config(ws, smtp.port, daily_limit=1)
    assert invoke(runner, "send", str(issue), "--yes").exit_code == 4
    ws.subscribers_path.rename(ws.subscribers_path.with_suffix(".weg"))
    db = sqlite3.connect(journal_path(ws.journal_dir, "2026-12-impuls"))
    db.execute("UPDATE recipients SET sent_at = '2000-01-01T00:00:00+00:00'")  # a day later
    db.commit()
    db.close()
    result = invoke(runner, "send", str(issue), "--yes")
    assert result.exit_code == 1
    assert "die Abonnent:innen-Datei fehlt" in result.stderr
    assert journal_counts(ws)["skipped"] == 0 and journal_counts(ws)["pending"] == 2


def test_broken_subscriber_file_on_resume_with_two_connections_skips_nobody(ws, runner, smtp, mailbox,
                                                                           issue) -> None:
    add_people(ws, [(f"p{i}@example.org", "", "active") for i in range(40)])
    smtp_config(ws, smtp.port, connections=2)
    store = SubscriberStore(ws.subscribers_path)
    with store.change():
        pass  # make sure the file exists
    from newsletter.issue import parse_issue as parse
    from newsletter.send import open_journal, plan_send
    open_journal(ws, plan_send(ws, parse(issue))).close()  # frozen, nothing sent yet
    text = ws.subscribers_path.read_text()
    ws.subscribers_path.write_text(text.replace('email = "p7@example.org"', 'email = "p3@example.org"'))
    result = invoke(runner, "send", str(issue), "--yes")
    assert result.exit_code == 1 and "steht doppelt" in result.stderr
    ws.subscribers_path.write_text(text)
    assert invoke(runner, "send", str(issue), "--yes").exit_code == 0
    assert journal_counts(ws)["sent"] == 40 and journal_counts(ws)["skipped"] == 0


def test_sender_rejected_at_rcpt_stops_and_bounces_nobody(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, [(f"p{i}@example.org", "", "active") for i in range(4)])
    smtp_config(ws, smtp.port)
    for i in range(4):
        mailbox.rcpt_replies[f"p{i}@example.org"] = "550 5.1.0 <impuls@praxis.example.org>: Sender address rejected"
    result = invoke(runner, "send", str(issue), "--yes")
    assert result.exit_code == 1
    assert f"127.0.0.1:{smtp.port}: Absender impuls@praxis.example.org abgelehnt (550" in result.stderr
    assert {s.status for s in SubscriberStore(ws.subscribers_path).load()} == {"active"}
    assert journal_counts(ws)["pending"] == 4


def test_the_same_refusal_three_times_in_a_row_halts_and_retry_failed_resumes(ws, runner, smtp, mailbox,
                                                                             issue) -> None:
    people = [(f"p{i}@example.org", "", "active") for i in range(6)]
    add_people(ws, people)
    smtp_config(ws, smtp.port)
    for address, _, _ in people:
        mailbox.rcpt_replies[address] = "554 5.7.1 Message refused by local policy"
    result = invoke(runner, "send", str(issue), "--yes")
    assert result.exit_code == 1 and "3 Empfänger:innen in Folge" in result.stderr
    counts = journal_counts(ws)
    assert (counts["failed"], counts["pending"]) == (3, 3)
    mailbox.rcpt_replies.clear()
    assert invoke(runner, "send", str(issue), "--yes").exit_code == 5  # three still failed
    assert journal_counts(ws)["failed"] == 3  # failed stay failed unless the author asks
    result = invoke(runner, "send", str(issue), "--yes", "--retry-failed")
    assert result.exit_code == 0, result.output
    assert Counter(r.rcpt_to[0] for r in mailbox.received) == {p[0]: 1 for p in people}


def test_421_at_mail_twice_is_a_provider_limit_not_a_failure(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, [(f"p{i}@example.org", "", "active") for i in range(3)])
    smtp_config(ws, smtp.port, limit_pause=0.05)
    mailbox.mail_reply = "421 4.7.0 Try again later, closing connection"
    result = invoke(runner, "send", str(issue), "--yes")
    assert result.exit_code == 3
    assert "Vom Server angehalten" in result.stdout
    counts = journal_counts(ws)
    assert counts["pending"] == 3 and counts["failed"] == counts["deferred"] == 0


def test_a_full_mailbox_is_deferred_and_does_not_stop_the_send(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, [(f"p{i}@example.org", "", "active") for i in range(4)])
    smtp_config(ws, smtp.port, retry_delay=3600)
    mailbox.rcpt_replies["p1@example.org"] = "452 4.2.2 Mailbox full, over quota"
    assert invoke(runner, "send", str(issue), "--yes").exit_code == 4
    counts = journal_counts(ws)
    assert (counts["sent"], counts["deferred"]) == (3, 1)


def test_a_renamed_issue_is_not_sent_again(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, [("a@example.org", "", "active")])
    smtp_config(ws, smtp.port)
    assert invoke(runner, "send", str(issue), "--yes").exit_code == 0
    renamed = issue.rename(issue.with_name("2026-12-impuls-neu.md"))
    result = invoke(runner, "send", str(renamed), "--yes")
    assert result.exit_code == 1
    assert "schon als „2026-12-impuls“ versendet" in result.stderr
    assert len(mailbox.received) == 1


def test_international_domains_umlaut_slugs_and_long_names_stay_correct(ws, runner, smtp, mailbox) -> None:
    name = "Hans-Jürgen Müller-Lüdenscheidt von Schönhausen-Übermaß 🌱"
    add_people(ws, [("anna@straße.de", name, "active"), ("ben@example.org", "=?utf-8?q?Fake?=", "active")])
    smtp_config(ws, smtp.port)
    path = write_issue(ws, "2026-12-übergänge", "Hallo {{ name }}\n")
    result = invoke(runner, "send", str(path), "--yes")
    assert result.exit_code == 0, result.output
    received = {r.rcpt_to[0]: r for r in mailbox.received}
    assert set(received) == {"anna@xn--strae-oqa.de", "ben@example.org"}
    for item in received.values():
        head = item.data.partition(b"\r\n\r\n")[0]
        assert head.isascii()
        assert all(len(word) <= 75 for word in re.findall(rb"=\?[^?]+\?[qQbB]\?[^?]*\?=", head))
        assert re.fullmatch(r"<[A-Za-z0-9.-]+@praxis\.example\.org>", item.message["Message-ID"])
    # decode_header joins adjacent encoded words as RFC 2047 says (the policy parser adds a space there)
    head = received["anna@xn--strae-oqa.de"].data.partition(b"\r\n\r\n")[0].decode()
    to_value = re.search(r"^To: (.*?)\r\n(?! )", head, re.M | re.S).group(1).replace("\r\n ", " ")
    assert str(make_header(decode_header(to_value))) == f"{name} <anna@xn--strae-oqa.de>"
    assert received["ben@example.org"].message["To"].addresses[0].display_name == "=?utf-8?q?Fake?="


def test_base_url_with_umlauts_is_a_config_error(ws, runner, issue) -> None:
    config = ws.root / "newsletter.toml"
    config.write_text(config.read_text().replace("newsletter.praxis.example.org", "newsletter.bücher.example"))
    result = invoke(runner, "check", str(issue))
    assert result.exit_code == 1 and "[newsletter] base_url: bitte ohne Umlaute" in result.stderr


def test_someone_erased_after_a_failure_is_skipped_by_retry_failed(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, [(f"p{i}@example.org", "", "active") for i in range(3)])
    smtp_config(ws, smtp.port)
    mailbox.rcpt_replies_once["p1@example.org"] = "550 5.7.1 refused by policy"
    assert invoke(runner, "send", str(issue), "--yes").exit_code == 5
    assert invoke(runner, "subscribers", "forget", "p1@example.org", "--yes").exit_code == 0
    result = invoke(runner, "send", str(issue), "--yes", "--retry-failed")
    assert result.exit_code == 0, result.output  # the scrubbed row is skipped, not a stop
    counts = journal_counts(ws)
    assert (counts["sent"], counts["skipped"], counts["failed"], counts["pending"]) == (2, 1, 0, 0)
    assert sorted(r.rcpt_to[0] for r in mailbox.received) == ["p0@example.org", "p2@example.org"]


def test_two_connections_leave_no_due_row_behind_when_a_retry_is_far_off(ws, runner, smtp, mailbox,
                                                                         issue) -> None:
    people = [(f"p{i}@example.org", "", "active") for i in range(8)]
    add_people(ws, people)
    smtp_config(ws, smtp.port, connections=2, rate_limit="20/second", retry_delay=2000)
    mailbox.rcpt_replies_once["p0@example.org"] = "451 4.3.0 temporary local problem"
    result = invoke(runner, "send", str(issue), "--yes")
    assert result.exit_code == 4, result.output
    counts = journal_counts(ws)
    assert (counts["sent"], counts["deferred"], counts["pending"]) == (7, 1, 0)
    assert "zurückgestellt" in result.stdout
