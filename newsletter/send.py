"""Sending an issue: freeze the recipients, then deliver each message exactly once.

The journal decides who is next; the transport says what the server answered; `replies.py`
says whose problem an answer is. This module turns that into journal states: it keeps the
rate, defers one person's temporary failure and retries it with backoff for a retry window
(days, like a mail server), pauses the whole run when the server speaks about the account,
and stops cleanly when asked. What the author sees comes back as a `SendSummary`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from newsletter.check import CheckReport, check_issue
from newsletter.errors import NewsletterError, SubscriberError, TransportError
from newsletter.headers import ascii_address
from newsletter.issue import Issue
from newsletter.journal import (
    DEFERRED,
    FAILED,
    PENDING,
    SENT,
    UNKNOWN,
    Row,
    SendJournal,
    journal_path,
    journals,
    sent_today,
)
from newsletter.message import MessageFactory, Recipient, validate_message
from newsletter.preview import SAMPLE, recipient_merge_values
from newsletter.render import RenderedIssue
from newsletter.replies import Reply, Verdict, may_be_a_streak, verdict
from newsletter.subscribers import SubscriberStore, normalize_email, now
from newsletter.texts import texts
from newsletter.transport import SmtpTransport, Transport, make_transport, smtp_password
from newsletter.workspace import Workspace


class Event(StrEnum):
    """What a run reports while it goes, for the progress bar."""

    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"
    DEFERRED = "deferred"
    PAUSE = "pause"        # the server refused the account; the note says until when and why
    WAITING = "waiting"    # nothing due; a deferred retry comes within a minute
    SENDING = "sending"    # back to work after a pause or a wait


class Outcome(StrEnum):
    """How a run ended; each has its exit code (EXIT_CODES, documented in docs/anleitung.md)."""

    COMPLETE = "complete"              # every recipient sent, or skipped because they left
    PROVIDER_LIMIT = "provider_limit"  # the server kept refusing the account: stopped, nobody lost
    WAITING = "waiting"                # deferred recipients wait for a later try
    DAILY_LIMIT = "daily_limit"        # [smtp] daily_limit reached: the rest tomorrow
    FAILURES = "failures"              # nothing left to try, but some failed or are unclear
    INTERRUPTED = "interrupted"        # Ctrl-C


EXIT_CODES = {Outcome.COMPLETE: 0, Outcome.PROVIDER_LIMIT: 3, Outcome.WAITING: 4, Outcome.DAILY_LIMIT: 4,
              Outcome.FAILURES: 5, Outcome.INTERRUPTED: 130}

REFUSALS_IN_A_ROW = 3  # the same permanent refusal for this many people in a row: the server's problem
STREAK = 3             # the same temporary refusal for this many different people in a row: the account


@dataclass(frozen=True)
class SendOptions:
    rate: float | None = None          # messages per second, None for as fast as the server takes
    daily_limit: int = 0               # 0: no limit
    connections: int = 1
    retry_delay: float = 300.0         # first retry of a 4xx after this many seconds, then doubling
    max_backoff: float = 3600.0        # retries at least once an hour, like a mail server's queue
    retry_window: float = 3 * 86400.0  # then a recipient's temporary failure counts as failed
    max_wait: float = 60.0             # a run waits for a retry this close; a later one, a later run
    limit_pause: float = 600.0         # pause after the server refuses the account
    max_pauses: int = 3                # pauses in a row without a message getting through, then stop


@dataclass(frozen=True)
class Problem:
    email: str
    reply: str


@dataclass
class SendSummary:
    counts: dict[str, int]
    outcome: Outcome
    transport: str
    seconds: float
    delivered_now: int = 0
    failed_now: list[Problem] = field(default_factory=list)
    bounced_now: list[str] = field(default_factory=list)
    recovered_unknown: int = 0
    content_changed: bool = False
    archive_note: str = ""
    stop_reply: str = ""              # the server's reply that paused or stopped the run
    next_retry: float | None = None   # when the first deferred recipient is due again

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": str(self.outcome), "exit_code": self.exit_code, "counts": dict(self.counts),
            "transport": self.transport, "seconds": round(self.seconds, 3), "delivered_now": self.delivered_now,
            "failed_now": [{"email": p.email, "reply": p.reply} for p in self.failed_now],
            "bounced_now": self.bounced_now, "recovered_unknown": self.recovered_unknown,
            "content_changed": self.content_changed, "stop_reply": self.stop_reply or None,
            "next_retry": _iso(self.next_retry),
        }


def _iso(when: float | None) -> str | None:
    return None if when is None else dt.datetime.fromtimestamp(when).astimezone().isoformat(timespec="seconds")


def file_stamp(store: SubscriberStore) -> tuple[int, ...]:
    """Which version of the list this is: an atomic rewrite of the file changes one of the first
    three, a change appended to the log (an unsubscribe just answered) the last."""
    path = store.path
    try:
        info = os.stat(path)  # noqa: PTH116 - once per message: without Path's layers
    except FileNotFoundError:
        raise NewsletterError(f"{path}: die Abonnent:innen-Datei fehlt; Versand angehalten, "
                              "nichts übersprungen") from None
    last = store.changes.last_seq() if store.changes is not None else 0
    return (info.st_mtime_ns, info.st_size, info.st_ino, last)


@dataclass(frozen=True)
class Audience:
    """The active, confirmed subscribers (id, email, name) as one version of the file has them."""

    stamp: tuple[int, ...] | None  # None: there is no subscriber file
    people: list[tuple[str, str, str]]


def read_audience(store: SubscriberStore) -> Audience:
    if not store.path.exists():
        return Audience(None, [])
    stamp = file_stamp(store)  # before reading: a rewrite meanwhile only means one more read later
    return Audience(stamp, [(s.id, s.email, s.name) for s in store.active()])


class SubscriberWatch:
    """Who may still be mailed: re-read whenever the subscriber file changes during a send."""

    def __init__(self, store: SubscriberStore, audience: Audience | None = None) -> None:
        self.store = store
        self._stamp: tuple[int, ...] | None = audience.stamp if audience else None
        self.active: frozenset[str] = frozenset(p[0] for p in audience.people) if audience else frozenset()
        self._lock = threading.Lock()

    def refresh(self) -> frozenset[str]:
        """The ids still active. A missing or unreadable file stops the send: it never means "everyone left"."""
        with self._lock:
            stamp = file_stamp(self.store)
            if stamp != self._stamp:
                self.active = frozenset(s.id for s in self.store.active())
                self._stamp = stamp  # only after a good read: a broken file is read (and refused) again
            return self.active


Progress = Callable[[Event, str], None]


class SendRun:
    """Delivers the due rows of one journal over one or more transports (one worker each)."""

    def __init__(self, journal: SendJournal, factory: MessageFactory,
                 transports: Callable[[], Transport], store: SubscriberStore,
                 options: SendOptions, journal_dir: Path,
                 progress: Progress = lambda event, note: None,
                 clock: Callable[[], float] = time.time, audience: Audience | None = None) -> None:
        self.journal = journal
        self.factory = factory
        self.transports = transports
        self.store = store
        self.watch = SubscriberWatch(store, audience)  # the list just frozen need not be read again
        self.options = options
        self.journal_dir = journal_dir
        self.progress = progress
        self.clock = clock
        self.stop = threading.Event()
        self._pace = threading.Lock()
        self._next_slot = 0.0
        self._state = threading.Lock()
        self.reason: Outcome | None = None  # set when the run is stopped before it runs out of work
        self.error: BaseException | None = None
        self.sent_today = 0
        self.failed_now: list[Problem] = []
        self.bounced_now: list[str] = []
        self.delivered = 0
        self.description = ""
        self.workers = 0            # alive right now
        self.pauses = 0             # rounds in a row, without a message getting through in between
        self.paused_until = 0.0     # clock time: the end of the current round of pauses
        self.stop_reply = ""
        self._refusals: tuple[tuple[int, str] | None, int] = (None, 0)
        self._streak: tuple[str, dict[str, Row]] = ("", {})  # the kind of refusal, and whom it hit

    def run(self) -> SendSummary:
        started = time.monotonic()
        self.sent_today = sent_today(self.journal_dir) if self.options.daily_limit else 0
        count = max(1, self.options.connections)
        self.workers = count
        threads = [threading.Thread(target=self._worker, name=f"send-{n}", daemon=True) for n in range(count)]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)
        except KeyboardInterrupt:  # a second Ctrl-C while waiting: stop right now
            self.halt(Outcome.INTERRUPTED)
            raise
        if self.error is not None:
            raise self.error
        counts = self.journal.counts()
        return SendSummary(
            counts=counts, outcome=self._outcome(counts), transport=self.description,
            seconds=time.monotonic() - started, delivered_now=self.delivered,
            failed_now=self.failed_now, bounced_now=self.bounced_now,
            stop_reply=self.stop_reply or (self.journal.waiting_reply() if counts[DEFERRED] else ""),
            next_retry=self.journal.earliest_retry(),
        )

    def _outcome(self, counts: dict[str, int]) -> Outcome:
        if self.reason is not None:
            return self.reason
        if counts[PENDING] or counts[DEFERRED]:
            return Outcome.WAITING
        if counts[FAILED] or counts[UNKNOWN]:
            return Outcome.FAILURES
        return Outcome.COMPLETE

    def halt(self, reason: Outcome) -> None:
        with self._state:
            if not self.stop.is_set():
                self.reason = reason
            self.stop.set()

    # -- one worker: one connection ---------------------------------------------------------

    def _worker(self) -> None:
        held: Row | None = None  # reserved for this worker's next message, not started yet
        pause = [0.0]  # until when the server refused this worker (clock time)
        try:
            with self.transports() as transport:
                self.description = transport.description
                while not self.stop.is_set():
                    if pause[0] and not self._wait_while_paused(pause):
                        return
                    if held is None:
                        held = self.journal.reserve(self.clock())
                        if held is None:
                            if not self._wait_for_retry():
                                return
                            continue
                    if self.options.daily_limit and self._daily_limit_reached():
                        return
                    self._wait_for_slot()
                    if self.stop.is_set():
                        return
                    row, held = held, None
                    held = self._send_one(transport, row, pause)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises
            self.error = self.error or exc
            self.halt(Outcome.INTERRUPTED)
        finally:
            try:
                if held is not None:
                    self.journal.release(held)
                self.journal.flush()  # the last outcome, which no further start commits
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises
                self.error = self.error or exc
                self.halt(Outcome.INTERRUPTED)
            finally:
                with self._state:
                    self.workers -= 1

    def _send_one(self, transport: Transport, row: Row, pause: list[float]) -> Row | None:
        """Send one reserved row; returns the row reserved for the next message meanwhile.

        A reservation may wait for the disk (an fsync, see journal.py). The transport makes it
        before the final ".", where it waits for the server anyway (a distant server's answers
        to MAIL, RCPT and DATA, else a near one's reading of the data): the fsync overlaps the
        network, and where each row is reserved alone it makes this `sending` durable first.
        The message itself is built while the server answers MAIL, RCPT and DATA.
        """
        following: list[Row | None] = []

        def before_end() -> None:
            if not following:
                following.append(self.journal.reserve(self.clock()))

        def release_following() -> None:
            for reserved in following:
                if reserved is not None:
                    self.journal.release(reserved)
            following.clear()

        recipient = Recipient(row.subscriber_id, row.email, row.name)
        try:
            allowed = self.watch.refresh()  # who left since the last message is skipped from now on
        except BaseException:
            self.journal.release(row)
            raise
        if not self.journal.start(row, allowed):  # left, bounced or erased (the address is gone then)
            return None
        message_id = self.factory.message_id(recipient)
        reply: Reply | None = None
        try:
            if self.journal.holds_reserved():  # no disk to wait for: taken now, nothing to do before the "."
                before_end()
            reply = transport.deliver(self.factory.envelope_from, ascii_address(row.email),
                                      lambda: self.factory.build(recipient, message_id=message_id).data,
                                      None if following else before_end,
                                      envid=message_id.strip("<>").partition("@")[0])
            until = self._record(row, message_id, reply, transport.where)
            if until:
                pause[0] = until
                release_following()  # this worker waits: another one may have better luck
        except BaseException as exc:
            if reply is None and isinstance(exc, TransportError | ValueError):
                # Nothing went out (login, TLS, a message that cannot be built).
                self.journal.release(row)
            release_following()
            raise
        return following[0] if following else None

    def _record(self, row: Row, message_id: str, reply: Reply, where: str) -> float:
        """Turn the reply into the row's state; the end of a pause when the server refused the account."""
        judged = verdict(reply)
        streak = self._note(row, reply, judged)
        if judged is Verdict.SENT:
            self.journal.finish(row.seq, SENT, reply.code, reply.text, message_id)
            with self._state:
                self.delivered += 1
                self.sent_today += 1
                self.pauses = 0
            self.progress(Event.SENT, "")
        elif judged is Verdict.MAYBE_SENT:
            self.journal.finish(row.seq, UNKNOWN, reply.code, reply.text, message_id)
            self.progress(Event.UNKNOWN, "")
        elif judged is Verdict.PAUSE:
            self.journal.release(row, reply.code, reply.text)
            return self._pause(reply)
        elif judged is Verdict.RETRY:
            self._defer(row, reply)
            if streak:  # not their problem after all: as if never tried, and the run pauses
                for hit in streak:
                    self.journal.restore(hit, reply.code, reply.text)
                return self._pause(reply)
        elif judged is Verdict.SENDER_REFUSED:
            self.journal.release(row, reply.code, reply.text)
            raise TransportError(f"{where}: Absender {self.factory.envelope_from} abgelehnt ({reply})")
        else:
            self.journal.finish(row.seq, FAILED, reply.code, reply.text)
            self._failed(row, reply)
            if judged is Verdict.NO_SUCH_MAILBOX:
                self._mark_bounced(row.subscriber_id, reply)
                with self._state:
                    self.bounced_now.append(row.email)
            else:
                self._watch_for_refusals(reply)
        return 0.0

    def _note(self, row: Row, reply: Reply, judged: Verdict) -> list[Row]:
        """Keep the streak of temporary refusals. When different people in a row get the same
        one, it was the account all along: returns those rows, as they were before."""
        with self._state:
            kind, hit = self._streak
            if not may_be_a_streak(reply):
                if judged is not Verdict.PAUSE:
                    self._streak = ("", {})
                return []
            if reply.kind != kind:
                kind, hit = reply.kind, {}
            hit = {**hit, row.subscriber_id: hit.get(row.subscriber_id, row)}
            if len(hit) < STREAK:
                self._streak = (kind, hit)
                return []
            self._streak = ("", {})
            return list(hit.values())

    def _defer(self, row: Row, reply: Reply) -> None:
        """One person's temporary failure: retry with backoff, for the retry window, then fail."""
        now = self.clock()
        since = row.deferred_since or now
        if now - since >= self.options.retry_window:
            self.journal.finish(row.seq, FAILED, reply.code, reply.text, deferred_since=since)
            self._failed(row, reply)
            return
        # Doubling from at least a second, so even retry_delay = 0 ends in a wait, never a spin.
        first = max(self.options.retry_delay, 1.0)
        backoff = min(first * 2 ** min(row.attempts, 24), self.options.max_backoff)
        self.journal.finish(row.seq, DEFERRED, reply.code, reply.text, next_attempt_at=now + backoff,
                            deferred_since=since)
        self.progress(Event.DEFERRED, "")

    def _watch_for_refusals(self, reply: Reply) -> None:
        """The same permanent refusal for several people in a row is the server's problem, not theirs."""
        key = (reply.code, reply.text[:12])
        with self._state:
            last, count = self._refusals
            count = count + 1 if key == last else 1
            self._refusals = (key, count)
            if count >= REFUSALS_IN_A_ROW:
                self.error = TransportError(
                    f"der Server lehnt {REFUSALS_IN_A_ROW} Empfänger:innen in Folge gleich ab ({reply}); "
                    "Versand angehalten. Nach dem Beheben: newsletter send … --retry-failed")
                self.stop.set()

    def _mark_bounced(self, subscriber_id: str, reply: Reply) -> None:
        """The mailbox does not exist: never mail it again. Appended to the change log (milliseconds,
        where a rewrite of the file takes a second at 20,000 people); the send's end writes them all."""
        from newsletter.changes import BOUNCE

        assert self.store.changes is not None
        self.store.changes.append(BOUNCE, subscriber_id, now(), source="Versand (SMTP)",
                                  issue=self.journal.path.stem, code=reply.status, diagnostic=str(reply)[:300])

    def _failed(self, row: Row, reply: Reply) -> None:
        with self._state:
            self.failed_now.append(Problem(row.email, str(reply)))
        self.progress(Event.FAILED, "")

    # -- waiting ----------------------------------------------------------------------------

    def _pause(self, reply: Reply) -> float:
        """The server refused the account (a limit, a full disk, "closing connection"): this
        worker waits; the others go on until the server refuses them too, and then wait until
        the same moment (one round of pauses). Rounds in a row without a message getting
        through are counted, and after `max_pauses` the run stops: nobody is marked failed
        for the account's problem. Returns the end of the pause, 0.0 when the run stops."""
        with self._state:
            self.stop_reply = str(reply)
            now = self.clock()
            if self.paused_until > now:
                return self.paused_until  # this round is on already
            self.pauses += 1
            stop = self.pauses > self.options.max_pauses
            if not stop:
                self.paused_until = now + self.options.limit_pause
            until = self.paused_until
        if stop:
            self.halt(Outcome.PROVIDER_LIMIT)
            return 0.0
        self.progress(Event.PAUSE, f"bis {dt.datetime.fromtimestamp(until).astimezone():%H:%M}: {reply}")
        return until

    def _wait_while_paused(self, pause: list[float]) -> bool:
        """Wait out this worker's pause; False when nothing is left that waits for a first try
        (the other workers sent it meanwhile): then this worker ends at once instead of keeping
        a finished run open."""
        while not self.stop.is_set():
            remaining = pause[0] - self.clock()
            if remaining <= 0:
                pause[0] = 0.0
                self.progress(Event.SENDING, "")
                return True
            if not self.journal.has_pending():
                return False
            self.journal.commit()  # no write lock held while waiting
            self.stop.wait(min(remaining, 0.1))
        return False

    def _wait_for_slot(self) -> None:
        """Keep the configured rate across all connections."""
        if not self.options.rate:
            return
        with self._pace:
            now = time.monotonic()
            slot = max(self._next_slot, now)
            self._next_slot = slot + 1.0 / self.options.rate
        if slot > now:
            self.journal.commit()  # no write lock held while waiting: `subscribers forget` may run
            self.stop.wait(slot - now)

    def _wait_for_retry(self) -> bool:
        """Nothing due for this worker: wait for the next deferred retry if it comes within
        `max_wait`, else end (the run reports WAITING with the time of the next try)."""
        retry_at = self.journal.earliest_retry()
        if retry_at is None:
            return False
        delay = retry_at - self.clock()
        if delay > self.options.max_wait:  # this worker ends; others may still hold rows to send
            return False
        self.journal.commit()
        self.progress(Event.WAITING, "")
        self.stop.wait(max(0.0, min(delay, 1.0)))
        return True

    def _daily_limit_reached(self) -> bool:
        with self._state:
            reached = self.sent_today >= self.options.daily_limit
        if reached:
            self.halt(Outcome.DAILY_LIMIT)
        return reached


# -- preparing a send: what the CLI calls ---------------------------------------------------


@dataclass
class SendPlan:
    """Everything known before the first message goes out, for the author to confirm."""

    issue: Issue
    report: CheckReport
    rendered: RenderedIssue
    journal_path: Path
    to_send: int
    already: dict[str, int] | None  # counts of an existing journal, None for a first run
    audience: Audience | None = None  # first run: who it goes to, read once for plan, journal and watch
    transport: str = ""
    rate: float | None = None
    last_stop: str = ""  # how the previous run of this issue ended, if it stopped early
    mailbox: str = ""    # what the inbox step found before this send ("" without [imap])
    mailbox_problem: str = ""  # why the mailbox could not be read, if it could not

    def again(self, retry_unknown: bool, retry_failed: bool) -> int:
        """How many more the author asks for with --retry-unknown / --retry-failed."""
        already = self.already or {}
        return (already.get(UNKNOWN, 0) if retry_unknown else 0) + (already.get(FAILED, 0) if retry_failed else 0)


def read_mailbox_first(workspace: Workspace, dry_run: bool) -> tuple[str, str]:
    """With [imap], the inbox step before every send: whoever bounced or left by mail is not frozen
    into the journal. Returns (what it found, why it failed); an unreachable mailbox is a warning."""
    if not workspace.config.imap.host:
        return "", ""
    from newsletter.inbox import read_inbox  # IMAPClient is imported only when there is a mailbox

    try:
        return read_inbox(workspace, dry_run=dry_run).summary_line(), ""
    except NewsletterError as exc:
        return "", str(exc)


def plan_send(workspace: Workspace, issue: Issue, mailbox: bool = True, dry_run: bool = False) -> SendPlan:
    """Check the issue and count who would get it now; refuses an issue that fails check. With
    `mailbox` (and [imap]), her mailbox is read first (in a dry run without changing anything)."""
    path = journal_path(workspace.journal_dir, issue.slug)
    store = workspace.store()
    audience = None if path.exists() else read_audience(store)  # read once, for check and the plan
    report = check_issue(workspace, issue, audience.people if audience else None)
    if not report.ok or report.rendered is None:
        raise NewsletterError(f"{issue.path.name}: `newsletter check` meldet {len(report.errors)} Fehler; "
                              f"nichts wurde gesendet. Erster Fehler: {report.errors[0]}")
    smtp = workspace.config.smtp
    transport = make_transport(smtp, workspace.outbox_dir / issue.slug, workspace.config.path.parent, "")
    rate = smtp.messages_per_second if smtp.host else None
    journal = SendJournal.existing(path)
    if journal is None:
        _refuse_a_second_send_under_a_new_name(workspace, issue)
    found, problem = read_mailbox_first(workspace, dry_run) if mailbox else ("", "")
    if journal is None:
        if audience is None or (store.path.exists() and file_stamp(store) != audience.stamp):  # the mailbox changed it
            audience = read_audience(store)
        if not audience.people:
            raise NewsletterError("keine aktiven, bestätigten Abonnent:innen; nichts zu senden")
        return SendPlan(issue, report, report.rendered, path, len(audience.people), None, audience,
                        transport.description, rate, mailbox=found, mailbox_problem=problem)
    with journal:
        counts = journal.counts(settled=not journal.is_running())  # as the send will find them
        due = counts[PENDING] + counts[DEFERRED]  # rows left `sending` become `unknown`, not resent
        last = journal.meta("last_outcome")
        stop = f"{last_run_text(last)} ({journal.meta('last_reply')})" if last and journal.meta("last_reply") else ""
        return SendPlan(issue, report, report.rendered, path, due, counts, None, transport.description, rate, stop,
                        mailbox=found, mailbox_problem=problem)


def last_run_text(outcome: str) -> str:
    return {Outcome.PROVIDER_LIMIT: "letzter Lauf vom Server angehalten",
            Outcome.WAITING: "letzter Lauf: Empfänger:innen zurückgestellt",
            Outcome.DAILY_LIMIT: "letzter Lauf: Tageslimit erreicht"}.get(Outcome(outcome), "letzter Lauf")


def _refuse_a_second_send_under_a_new_name(workspace: Workspace, issue: Issue) -> None:
    """A renamed issue file would start a fresh journal and mail everyone again: refuse that."""
    for other in journals(workspace.journal_dir):
        with SendJournal(other) as journal:
            subject = journal.meta("subject")
        if subject == issue.subject:
            raise NewsletterError(
                f"{issue.path.name}: eine Ausgabe mit demselben Betreff wurde schon als „{other.stem}“ versendet. "
                f"Datei umbenannt? Dann zurück zu issues/{other.stem}.md; sonst bitte den Betreff ändern.")


def content_hash(rendered: RenderedIssue) -> str:
    return hashlib.sha256((rendered.html + rendered.text).encode()).hexdigest()


def open_journal(workspace: Workspace, plan: SendPlan) -> SendJournal:
    """Open the issue's journal, freezing today's active subscribers on the first run."""
    journal = SendJournal(plan.journal_path)
    if not journal.frozen:
        store = workspace.store()
        if plan.audience is None or file_stamp(store) != plan.audience.stamp:  # changed since the plan
            plan.audience = read_audience(store)
        journal.freeze(plan.audience.people, {
            "issue": str(plan.issue.path.name), "subject": plan.issue.subject,
            "content": content_hash(plan.rendered),
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        })
    return journal


def options_from(workspace: Workspace) -> SendOptions:
    smtp = workspace.config.smtp
    # The outbox is a folder on this computer: no provider to be polite to, no limits.
    return SendOptions(rate=smtp.messages_per_second if smtp.host else None,
                       daily_limit=smtp.daily_limit if smtp.host else 0,
                       connections=smtp.connections if smtp.host else 1,
                       retry_delay=smtp.retry_delay, retry_window=smtp.retry_seconds,
                       limit_pause=smtp.limit_pause)


def transport_factory(workspace: Workspace, folder: str) -> Callable[[], Transport]:
    """One transport per connection; the password (maybe from password_command) is asked for once, now."""
    config = workspace.config
    password = smtp_password(config.smtp) if config.smtp.host else ""
    return lambda: make_transport(config.smtp, workspace.outbox_dir / folder, config.path.parent, password)


def send_issue(workspace: Workspace, plan: SendPlan, *, retry_unknown: bool = False, retry_failed: bool = False,
               progress: Progress = lambda event, note: None,
               on_start: Callable[[int, int], None] = lambda total, done: None,
               on_run: Callable[[SendRun], None] = lambda run: None,
               transports: Callable[[], Transport] | None = None,
               clock: Callable[[], float] = time.time,
               refresh_archive: Callable[[Workspace], str] = lambda workspace: "") -> SendSummary:
    """The whole send after the author said yes: freeze (first run), recover what a dead run
    left, put back what the author asked to retry, deliver, and remember how it ended."""
    transports = transports or transport_factory(workspace, plan.issue.slug)
    with open_journal(workspace, plan) as journal:
        try:
            with journal.running():
                archive_note = refresh_archive(workspace)  # the page the mails link to, before the first
                recovered = journal.recover()
                if retry_unknown:
                    journal.retry(UNKNOWN)
                if retry_failed:
                    journal.retry(FAILED)
                changed = journal.meta("content") not in (None, content_hash(plan.rendered))
                factory = MessageFactory(plan.rendered, workspace.config, workspace.secret())
                run = SendRun(journal, factory, transports, workspace.store(),
                              options_from(workspace), workspace.journal_dir, progress=progress, clock=clock,
                              audience=plan.audience)
                on_run(run)
                counts = journal.counts()
                on_start(journal.total(), journal.total() - counts[PENDING] - counts[DEFERRED])
                try:
                    summary = run.run()
                except KeyboardInterrupt:
                    journal.set_meta({"last_outcome": Outcome.INTERRUPTED, "last_reply": ""})
                    raise
                finally:
                    journal.give_back()  # under the run lock: a next send must not find them held
                journal.set_meta({"last_outcome": summary.outcome, "last_reply": summary.stop_reply})
        finally:
            refresh_archive(workspace)  # listed once a message went out; its page goes again if none did
            write_changes(workspace.store())

    summary.recovered_unknown, summary.content_changed, summary.archive_note = recovered, changed, archive_note
    return summary


def write_changes(store: SubscriberStore) -> None:
    """The bounces a send noted (and anything `serve` answered meanwhile) into the file, in one rewrite.

    If the file is locked or broken now, they stay in the change log, counted by every reader,
    and the next command that changes the list writes them.
    """
    if store.changes is not None and store.changes.pending():
        with contextlib.suppress(SubscriberError), store.change():
            pass


# -- before the real send: test copies and the dry run --------------------------------------


@dataclass(frozen=True)
class TestCopy:
    address: str
    transport: str


def send_test_copies(workspace: Workspace, issue: Issue, addresses: list[str]) -> list[TestCopy]:
    """A [TEST] copy to each address, with sample merge values; no journal, nobody else."""
    report = check_issue(workspace, issue)
    if not report.ok or report.rendered is None:
        raise NewsletterError(f"{issue.path.name}: check meldet Fehler: {report.errors[0]}")
    values = recipient_merge_values(workspace, SAMPLE)
    prefix = texts(workspace.config.newsletter.language)["test_prefix"]
    factory = MessageFactory(report.rendered, workspace.config, workspace.secret(), prefix, values)
    copies = []
    with transport_factory(workspace, "test")() as transport:
        for address in addresses:
            message = factory.build(Recipient("test", normalize_email(address)))
            reply = transport.deliver(factory.envelope_from, message.envelope_to, message.data)
            if not reply.accepted:
                raise NewsletterError(f"{address}: nicht angenommen ({reply})")
            copies.append(TestCopy(address, transport.description))
    return copies


@dataclass(frozen=True)
class DryRun:
    messages: int
    problems: list[Problem]
    connection: str  # what was tried on the way out: "" for --offline or the outbox


def dry_run(workspace: Workspace, plan: SendPlan, offline: bool = False) -> DryRun:
    """Build and check every message; unless offline, also prove the way out: connect, start
    TLS, log in and quit, without a MAIL FROM. A problem there raises the same TransportError
    the real send would."""
    factory = MessageFactory(plan.rendered, workspace.config, workspace.secret())
    people = list(workspace.store().active())
    problems = [Problem(person.email, rule) for person in people
                for rule in validate_message(factory.build(Recipient(person.id, person.email, person.name)).data)]
    connection = ""
    if not offline and workspace.config.smtp.host:
        with transport_factory(workspace, plan.issue.slug)() as transport:
            assert isinstance(transport, SmtpTransport)
            transport.probe(factory.envelope_from)
            connection = transport.description
    return DryRun(len(people), problems, connection)
