"""`send` under a real provider's refusals: whose problem a reply is, pauses that end, retries
measured in days, and exit codes that say how a run ended.

Runs that could hang on a wrong pause (600 s) go through a real process with a timeout: a
finished run must end with its last message, and a test fails instead of waiting.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import invoke
from send_support import add_people, journal_counts, smtp_config
from smtp_server import Mailbox, SmtpServer

from newsletter.issue import parse_issue
from newsletter.journal import SendJournal, journal_path
from newsletter.replies import Reply, Step, Verdict, verdict
from newsletter.send import Outcome, plan_send, send_issue
from newsletter.workspace import Workspace

AGAIN = "newsletter send issues/2026-12-impuls.md"


def people(count: int) -> list[tuple[str, str, str]]:
    return [(f"p{i}@example.org", "", "active") for i in range(count)]


def send_process(ws: Workspace, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    """`newsletter send` as the author runs it, in its own process; a run that hangs fails the test."""
    env = {**os.environ, "NEWSLETTER_WORKSPACE": str(ws.root), "COLUMNS": "200"}
    process = subprocess.run([sys.executable, "-m", "newsletter", "send", "issues/2026-12-impuls.md", "--yes", *args],
                             cwd=ws.root, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    return process.returncode, process.stdout, process.stderr


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


# -- the table: whose problem a reply is ----------------------------------------------------------


@pytest.mark.parametrize(("code", "text", "step", "expected"), [
    (250, "2.0.0 Ok: queued", Step.END, Verdict.SENT),
    (0, "connection lost", Step.END, Verdict.MAYBE_SENT),
    (421, "4.7.0 Too many messages, try again later", Step.MAIL, Verdict.PAUSE),
    (421, "4.3.0 Service shutting down", Step.RCPT, Verdict.PAUSE),
    (452, "4.3.1 Insufficient system storage", Step.MAIL, Verdict.PAUSE),
    (451, "4.7.1 Greylisted, try again later", Step.RCPT, Verdict.RETRY),
    (450, "4.2.0 Rate limit for this recipient", Step.RCPT, Verdict.RETRY),
    (452, "4.2.2 Mailbox full", Step.RCPT, Verdict.RETRY),
    (451, "4.3.0 Temporary failure", Step.END, Verdict.RETRY),
    (550, "5.1.1 <a@example.org>: Recipient address rejected: User unknown", Step.RCPT, Verdict.NO_SUCH_MAILBOX),
    (550, "Requested action not taken: mailbox unavailable", Step.RCPT, Verdict.NO_SUCH_MAILBOX),
    (554, "5.7.1 Message refused by local policy", Step.RCPT, Verdict.REFUSED),
    (550, "5.1.0 <impuls@praxis.example.org>: Sender address rejected", Step.RCPT, Verdict.SENDER_REFUSED),
    (553, "5.7.1 Sender address rejected: not owned by user", Step.MAIL, Verdict.SENDER_REFUSED),
])
def test_each_reply_is_read_as_whose_problem_it_is(code, text, step, expected) -> None:
    assert verdict(Reply(code, text, step)) is expected


# -- the account: 421 with hanging up, limits, a full disk at the provider -------------------------


def test_421_and_hang_up_at_mail_pauses_and_fails_nobody(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, people(5))
    smtp_config(ws, smtp.port)
    mailbox.mail_reply = "421 4.7.0 Too many messages, try again later"
    result = invoke(runner, "send", str(issue), "--yes")
    assert result.exit_code == 3, result.output
    counts = journal_counts(ws)
    assert (counts["pending"], counts["failed"], counts["deferred"]) == (5, 0, 0)
    assert mailbox.connections <= 4  # the first try and one after each of the three pauses, not one per row
    assert last_line(result.stdout) == (
        "Vom Server angehalten: er nimmt gerade keine Nachrichten an. Antwort des Servers: „421 4.7.0 Too many "
        f"messages, try again later“. 5 warten, niemand ist verloren. Später weiter mit: {AGAIN}")
    status = json.loads(invoke(runner, "status", str(issue), "--json", "--failed").stdout)
    assert status["last_reply"] == "421 4.7.0 Too many messages, try again later"
    assert {(p["state"], p["code"]) for p in status["problems"]} == {("pending", 421)}
    mailbox.mail_reply = None
    again = invoke(runner, "send", str(issue), "--yes")
    assert again.exit_code == 0, again.output
    assert last_line(again.stdout) == "Fertig."
    assert Counter(r.rcpt_to[0] for r in mailbox.received) == {p[0]: 1 for p in people(5)}


def test_421_once_then_everyone_gets_exactly_one_copy(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, people(6))
    smtp_config(ws, smtp.port)
    mailbox.mail_replies_once = ["421 4.7.0 Try again later, closing connection"]
    result = invoke(runner, "send", str(issue), "--yes")
    assert result.exit_code == 0, result.output
    assert Counter(r.rcpt_to[0] for r in mailbox.received) == {p[0]: 1 for p in people(6)}
    assert journal_counts(ws)["sent"] == 6


def test_452_431_at_mail_stops_with_the_servers_own_words(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, people(3))
    smtp_config(ws, smtp.port)
    mailbox.mail_reply = "452 4.3.1 Insufficient system storage"
    result = invoke(runner, "send", str(issue), "--yes")
    assert result.exit_code == 3
    assert "„452 4.3.1 Insufficient system storage“" in last_line(result.stdout)
    assert "bremst" not in result.stdout  # a full disk at the provider is no rate limit
    assert journal_counts(ws)["pending"] == 3


def test_the_same_temporary_refusal_for_everyone_is_the_account(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, people(12))
    smtp_config(ws, smtp.port)
    mailbox.rcpt_reply_all = "451 4.7.1 Rate limit exceeded, try again later"
    result = invoke(runner, "send", str(issue), "--yes")
    assert result.exit_code == 3, result.output
    counts = journal_counts(ws)
    assert counts["failed"] == 0 and counts["sent"] == 0
    assert counts["pending"] == 12  # three people told us it is the account; nobody's retry window started
    assert "„451 4.7.1 Rate limit exceeded, try again later“" in last_line(result.stdout)


# -- one recipient: never anyone else's delay --------------------------------------------------------


@pytest.fixture
def plain_smtp() -> SmtpServer:
    server = SmtpServer(Mailbox()).start()
    yield server
    server.stop()


@pytest.mark.parametrize("connections", [1, 4])
@pytest.mark.parametrize("reply", ["451 4.7.1 Greylisted, try again later",
                                   "450 4.2.0 <p3@example.org>: Recipient rate limit exceeded",
                                   "452 4.2.2 Mailbox full"])
def test_one_recipients_temporary_refusal_delays_nobody_else(ws, plain_smtp, issue, reply, connections) -> None:
    add_people(ws, people(30))
    smtp_config(ws, plain_smtp.port, connections=connections, retry_delay=300, limit_pause=600)
    plain_smtp.mailbox.rcpt_replies["p3@example.org"] = reply
    code, stdout, _ = send_process(ws)  # a pause of 600 s would make this time out
    assert code == 4
    assert Counter(r.rcpt_to[0] for r in plain_smtp.mailbox.received) == {
        p[0]: 1 for p in people(30) if p[0] != "p3@example.org"}
    counts = journal_counts(ws)
    assert (counts["sent"], counts["deferred"], counts["pending"]) == (29, 1, 0)
    assert "Pause" not in stdout
    assert last_line(stdout).startswith("1 Nachricht(en) zurückgestellt (vorübergehender Fehler), "
                                        "der nächste Versuch ab ")
    assert last_line(stdout).endswith(f"Letzte Antwort des Servers: „{reply}“. Weiter mit: {AGAIN}")


def test_a_worker_refused_by_the_server_does_not_keep_a_finished_run_open(ws, plain_smtp, issue) -> None:
    add_people(ws, people(20))
    smtp_config(ws, plain_smtp.port, connections=2, limit_pause=600)
    plain_smtp.mailbox.mail_replies_once = ["421 4.7.0 Too many connections from your host"]
    plain_smtp.mailbox.delay = 0.002  # both connections get work
    code, stdout, stderr = send_process(ws, timeout=60)  # the refused worker's 600 s pause must end early
    assert code == 0, stdout + stderr
    assert last_line(stdout) == "Fertig."
    assert Counter(r.rcpt_to[0] for r in plain_smtp.mailbox.received) == {p[0]: 1 for p in people(20)}


# -- after the data: unclear, never resent unless asked ----------------------------------------------


def test_a_drop_right_after_the_final_dot_is_unclear_and_not_resent(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, people(4))
    smtp_config(ws, smtp.port)
    mailbox.drop_after_data = {"p1@example.org"}
    result = invoke(runner, "send", str(issue), "--yes")
    assert result.exit_code == 5, result.output
    counts = journal_counts(ws)
    assert (counts["sent"], counts["unknown"]) == (3, 1)
    assert last_line(result.stdout) == (
        "1 Nachricht(en) sind unklar (Abbruch mitten im Senden). Sie könnten angekommen sein; "
        f"erneut nur mit {AGAIN} --retry-unknown")
    mailbox.drop_after_data = set()
    assert invoke(runner, "send", str(issue), "--yes").exit_code == 5  # nothing resent by itself
    assert Counter(r.rcpt_to[0] for r in mailbox.received)["p1@example.org"] == 1
    assert invoke(runner, "send", str(issue), "--yes", "--retry-unknown").exit_code == 0
    assert Counter(r.rcpt_to[0] for r in mailbox.received)["p1@example.org"] == 2


def test_json_summary_names_the_outcome_and_exit_code(ws, runner, smtp, mailbox, issue) -> None:
    add_people(ws, people(3))
    smtp_config(ws, smtp.port, retry_delay=3600)
    mailbox.rcpt_replies["p2@example.org"] = "451 4.7.1 Greylisted, try again later"
    result = invoke(runner, "send", str(issue), "--yes", "--json")
    assert result.exit_code == 4
    data = json.loads(result.stdout)
    assert (data["outcome"], data["exit_code"], data["counts"]["sent"], data["counts"]["deferred"]) == (
        "waiting", 4, 2, 1)
    assert data["next_retry"] is not None


# -- the retry window: days, like a mail server, driven by an injected clock ------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def run_with(ws: Workspace, issue: Path, clock: Clock) -> Outcome:
    plan = plan_send(ws, parse_issue(issue))
    return send_issue(ws, plan, clock=clock).outcome


def test_a_deferred_recipient_is_retried_on_later_days_then_failed_after_the_window(ws, smtp, mailbox,
                                                                                   issue) -> None:
    add_people(ws, people(3))
    smtp_config(ws, smtp.port, retry_delay=300, retry_window="3 days")
    mailbox.rcpt_replies["p1@example.org"] = "451 4.7.1 Greylisted, try again later"
    clock = Clock()
    assert run_with(ws, issue, clock) is Outcome.WAITING  # day 1: the others went out, p1 waits
    assert (journal_counts(ws)["sent"], journal_counts(ws)["deferred"]) == (2, 1)
    for day in (1, 2):  # later runs, within the window: tried again, still waiting
        clock.now += 86400
        assert run_with(ws, issue, clock) is Outcome.WAITING, day
    clock.now += 86400 + 1  # past three days
    assert run_with(ws, issue, clock) is Outcome.FAILURES
    counts = journal_counts(ws)
    assert (counts["sent"], counts["deferred"], counts["failed"]) == (2, 0, 1)
    with SendJournal(journal_path(ws.journal_dir, "2026-12-impuls")) as journal:
        row = journal.rows(["failed"])[0]
    assert (row.email, row.last_code, row.attempts) == ("p1@example.org", 451, 4)


def test_a_deferred_recipient_accepted_on_a_later_day_is_sent(ws, smtp, mailbox, issue) -> None:
    add_people(ws, people(2))
    smtp_config(ws, smtp.port, retry_delay=300)
    mailbox.rcpt_replies["p0@example.org"] = "452 4.2.2 Mailbox full"
    clock = Clock()
    assert run_with(ws, issue, clock) is Outcome.WAITING
    clock.now += 120  # not due yet: nothing is tried
    assert run_with(ws, issue, clock) is Outcome.WAITING
    del mailbox.rcpt_replies["p0@example.org"]
    clock.now += 86400
    assert run_with(ws, issue, clock) is Outcome.COMPLETE
    assert Counter(r.rcpt_to[0] for r in mailbox.received) == {"p0@example.org": 1, "p1@example.org": 1}


# -- Ctrl-C and the rate wait, synchronised by events, not sleeps --------------------------------


def _start(ws: Workspace) -> subprocess.Popen:
    env = {**os.environ, "NEWSLETTER_WORKSPACE": str(ws.root)}
    return subprocess.Popen([sys.executable, "-m", "newsletter", "send", "issues/2026-12-impuls.md", "--yes"],
                            cwd=ws.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_ctrl_c_finishes_the_message_in_flight_and_stops(ws, plain_smtp, issue) -> None:
    add_people(ws, people(30))
    smtp_config(ws, plain_smtp.port)
    mailbox = plain_smtp.mailbox
    process = _start(ws)
    heard = threading.Event()
    errors: list[str] = []

    def read_stderr() -> None:
        for line in process.stderr:  # type: ignore[union-attr]
            errors.append(line)
            if "Halte an" in line:
                heard.set()

    threading.Thread(target=read_stderr, daemon=True).start()
    original = mailbox.handle_DATA

    async def interrupt_at_the_third(server, session, envelope):
        if len(mailbox.received) == 2:
            process.send_signal(signal.SIGINT)
            assert heard.wait(30)  # the send has taken the Ctrl-C before this message is accepted
        return await original(server, session, envelope)

    mailbox.handle_DATA = interrupt_at_the_third
    stdout = process.stdout.read()  # type: ignore[union-attr]
    assert process.wait(timeout=60) == 130
    assert last_line(stdout) == f"Angehalten. Genau hier weiter mit: {AGAIN}"
    counts = journal_counts(ws)
    assert (counts["sent"], counts["sending"], counts["unknown"]) == (3, 0, 0)  # the third one finished
    assert len(mailbox.received) == 3
    mailbox.handle_DATA = original
    assert send_process(ws)[0] == 0
    assert Counter(r.rcpt_to[0] for r in mailbox.received) == {p[0]: 1 for p in people(30)}


def test_a_send_waiting_for_its_rate_slot_holds_no_write_lock(ws, plain_smtp, issue) -> None:
    """`subscribers forget` must be able to scrub the journal while a slow send waits."""
    add_people(ws, people(3))
    smtp_config(ws, plain_smtp.port, rate_limit="2/minute")
    process = _start(ws)
    path = journal_path(ws.journal_dir, "2026-12-impuls")
    try:
        deadline = time.monotonic() + 30
        while True:  # poll until the first outcome is committed; the next slot is 30 s away
            assert time.monotonic() < deadline, "the first message was not recorded"
            if path.exists():
                db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                try:
                    state = db.execute("SELECT state FROM recipients WHERE email = 'p0@example.org'").fetchone()
                except sqlite3.OperationalError:
                    state = None
                finally:
                    db.close()
                if state == ("sent",):
                    break
            time.sleep(0.01)
        db = sqlite3.connect(path, timeout=0)
        try:
            db.execute("BEGIN IMMEDIATE")  # "database is locked" if the send kept its transaction open
            db.execute("ROLLBACK")
        finally:
            db.close()
    finally:
        process.kill()
        process.wait()


# -- the disk, not the server: one clear line ---------------------------------------------------------


def test_an_outbox_that_cannot_be_written_is_one_clear_line(ws, runner, issue) -> None:
    add_people(ws, people(2))
    ws.outbox_dir.mkdir(parents=True)
    (ws.outbox_dir / "2026-12-impuls").write_text("kein Ordner")  # where the folder should be
    result = invoke(runner, "send", str(issue), "--yes")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Fehler: Postausgang {ws.outbox_dir / '2026-12-impuls'}: kann nicht schreiben")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert journal_counts(ws)["pending"] == 2  # nothing lost: the same command continues once it is fixed


def test_a_damaged_journal_is_one_clear_line(ws, runner, issue) -> None:
    add_people(ws, people(2))
    ws.journal_dir.mkdir(parents=True)
    journal_path(ws.journal_dir, "2026-12-impuls").write_bytes(b"this is not a database" * 100)
    for command in (["send", str(issue), "--yes"], ["status"]):
        result = invoke(runner, *command)
        assert result.exit_code == 1, command
        assert "2026-12-impuls.sqlite: Versandprotokoll nicht les- oder schreibbar" in result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_a_damaged_journal_stops_a_send_with_a_daily_limit_instead_of_counting_zero(ws, runner, smtp, mailbox,
                                                                                    issue) -> None:
    add_people(ws, people(2))
    smtp_config(ws, smtp.port, daily_limit=1)
    ws.journal_dir.mkdir(parents=True)
    (ws.journal_dir / "2026-11-alt.sqlite").write_bytes(b"kaputt" * 1000)
    result = invoke(runner, "send", str(issue), "--yes")
    assert result.exit_code == 1 and "2026-11-alt.sqlite" in result.stderr
    assert mailbox.received == []
