"""Sending an issue: freeze the recipients, then deliver each message exactly once.

The journal decides who is next; the transport says what the server answered; this module
turns answers into journal states, keeps the rate, retries temporary failures with backoff,
pauses when the provider says "too much", and stops cleanly when asked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from newsletter.check import CheckReport, check_issue
from newsletter.errors import NewsletterError, TransportError
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
    sent_today,
)
from newsletter.message import MessageFactory, Recipient, ascii_address
from newsletter.render import RenderedIssue
from newsletter.subscribers import ACTIVE, BOUNCED, SubscriberStore
from newsletter.transport import Delivery, Transport
from newsletter.workspace import Workspace

DONE, INTERRUPTED, DAILY_LIMIT, PROVIDER_LIMIT, WAITING = (
    "done", "interrupted", "daily_limit", "provider_limit", "waiting")


REFUSALS_IN_A_ROW = 3


@dataclass(frozen=True)
class SendOptions:
    rate: float | None = None          # messages per second, None for as fast as the server takes
    daily_limit: int = 0               # 0: no limit
    connections: int = 1
    retry_delay: float = 60.0          # first retry of a 4xx after this many seconds, then doubling
    max_attempts: int = 5              # then a deferred message counts as failed
    max_wait: float = 900.0            # how long a run waits for retries before leaving them for later
    limit_pause: float = 600.0         # pause after the provider says "too many"
    max_pauses: int = 3                # then stop and let the author continue later


@dataclass
class SendSummary:
    counts: dict[str, int]
    reason: str
    transport: str
    seconds: float
    delivered_now: int = 0
    failed_now: list[tuple[str, int | None, str]] = field(default_factory=list)
    bounced_now: list[str] = field(default_factory=list)
    recovered_unknown: int = 0


def file_stamp(path: Path) -> tuple[int, int, int]:
    """Which version of a file this is: an atomic rewrite changes at least one of these."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise NewsletterError(f"{path}: die Abonnent:innen-Datei fehlt; Versand angehalten, "
                              "nichts übersprungen") from None
    return (info.st_mtime_ns, info.st_size, info.st_ino)


@dataclass(frozen=True)
class Audience:
    """The active, confirmed subscribers (id, email, name) as one version of the file has them."""

    stamp: tuple[int, int, int] | None  # None: there is no subscriber file
    people: list[tuple[str, str, str]]


def read_audience(store: SubscriberStore) -> Audience:
    if not store.path.exists():
        return Audience(None, [])
    stamp = file_stamp(store.path)  # before reading: a rewrite meanwhile only means one more read later
    return Audience(stamp, [(s.id, s.email, s.name) for s in store.active()])


class SubscriberWatch:
    """Who may still be mailed: re-read whenever the subscriber file changes during a send."""

    def __init__(self, store: SubscriberStore, audience: Audience | None = None) -> None:
        self.store = store
        self._stamp: tuple[int, int, int] | None = audience.stamp if audience else None
        self.active: frozenset[str] = frozenset(p[0] for p in audience.people) if audience else frozenset()
        self._lock = threading.Lock()

    def refresh(self) -> frozenset[str]:
        """The ids still active. A missing or unreadable file stops the send: it never means "everyone left"."""
        with self._lock:
            stamp = file_stamp(self.store.path)
            if stamp != self._stamp:
                self.active = frozenset(s.id for s in self.store.active())
                self._stamp = stamp  # only after a good read: a broken file is read (and refused) again
            return self.active


class SendRun:
    """Delivers the due rows of one journal over one or more transports."""

    def __init__(self, journal: SendJournal, factory: MessageFactory,
                 transports: Callable[[], Transport], store: SubscriberStore,
                 options: SendOptions, journal_dir: Path,
                 progress: Callable[[str], None] = lambda state: None,
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
        self.reason = DONE
        self.error: BaseException | None = None
        self.pauses = 0
        self.sent_today = 0
        self.summary_failed: list[tuple[str, int | None, str]] = []
        self.summary_bounced: list[str] = []
        self.delivered = 0
        self.description = ""
        self._refusals = 0
        self._last_refusal: tuple[int, str] | None = None

    def run(self) -> SendSummary:
        started = time.monotonic()
        self.sent_today = sent_today(self.journal_dir) if self.options.daily_limit else 0
        workers = [threading.Thread(target=self._worker, name=f"send-{n}", daemon=True)
                   for n in range(max(1, self.options.connections))]
        for worker in workers:
            worker.start()
        try:
            for worker in workers:
                while worker.is_alive():
                    worker.join(0.2)
        except KeyboardInterrupt:  # a second Ctrl-C while waiting: stop right now
            self.halt(INTERRUPTED)
            raise
        if self.error is not None:
            raise self.error
        counts = self.journal.counts()
        if self.reason == DONE and counts[DEFERRED]:
            self.reason = WAITING
        return SendSummary(
            counts=counts, reason=self.reason, transport=self.description,
            seconds=time.monotonic() - started, delivered_now=self.delivered,
            failed_now=self.summary_failed, bounced_now=self.summary_bounced,
        )

    def halt(self, reason: str) -> None:
        with self._state:
            if not self.stop.is_set():
                self.reason = reason
            self.stop.set()

    # -- one worker: one connection ---------------------------------------------------------

    def _worker(self) -> None:
        transport = self.transports()
        self.description = transport.description
        held: Row | None = None  # reserved for this worker's next message, not started yet
        try:
            while not self.stop.is_set():
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
                held = self._send_one(transport, row)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises
            self.error = exc
            self.halt(INTERRUPTED)
        finally:
            try:
                if held is not None:
                    self.journal.release(held)
                self.journal.flush()  # the last outcome, which no further start commits
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises
                self.error = self.error or exc
                self.halt(INTERRUPTED)
            finally:
                transport.close()

    def _send_one(self, transport: Transport, row: Row) -> Row | None:
        """Send one reserved row; returns the row reserved for the next message meanwhile.

        That reservation waits for the disk (an fsync, see journal.py). The transport makes it
        once the data is out and before the final ".", while the server reads the data: the
        server can accept the message only once its `sending` is durable, and the fsync
        overlaps the network. The message itself is built while the server answers MAIL, RCPT
        and DATA.
        """
        following: list[Row | None] = []

        def before_end() -> None:
            if not following:
                following.append(self.journal.reserve(self.clock()))

        recipient = Recipient(row.subscriber_id, row.email, row.name)
        try:
            allowed = self.watch.refresh()  # who left since the last message is skipped from now on
        except BaseException:
            self.journal.release(row)
            raise
        if not self.journal.start(row, allowed):  # left, bounced or erased (the address is gone then)
            return None
        delivery: Delivery | None = None
        try:
            delivery = transport.deliver(self.factory.envelope_from, ascii_address(row.email),
                                         lambda: self.factory.build(recipient).data, before_end)
            self._record(row, self.factory.message_id(recipient), delivery)
        except BaseException as exc:
            if delivery is None and isinstance(exc, TransportError | ValueError):
                # Nothing went out (login, TLS, refused sender, a message that cannot be built).
                self.journal.release(row)
            for reserved in following:
                if reserved is not None:
                    self.journal.release(reserved)
            raise
        self._watch_for_refusals(delivery)
        return following[0] if following else None

    def _watch_for_refusals(self, delivery: Delivery) -> None:
        """The same permanent refusal for several people in a row is the server's problem, not theirs."""
        refused = delivery.code >= 500 and not delivery.no_such_user
        key = (delivery.code, delivery.reply[:12]) if refused else None
        with self._state:
            if key is None:
                self._refusals = 0
            else:
                self._refusals = self._refusals + 1 if key == self._last_refusal else 1
            self._last_refusal = key
            if self._refusals >= REFUSALS_IN_A_ROW:
                self.error = TransportError(
                    f"der Server lehnt {REFUSALS_IN_A_ROW} Empfänger:innen in Folge gleich ab ({delivery.code} "
                    f"{delivery.reply}); Versand angehalten. Nach dem Beheben: newsletter send … --retry-failed")
                self.stop.set()

    def _record(self, row: Row, message_id: str, delivery: Delivery) -> None:
        journal, options = self.journal, self.options
        if delivery.accepted:
            journal.finish(row.seq, SENT, delivery.code, delivery.reply, message_id)
            with self._state:
                self.delivered += 1
                self.sent_today += 1
            self.progress(SENT)
        elif delivery.maybe_delivered:
            journal.finish(row.seq, UNKNOWN, delivery.code, delivery.reply, message_id)
            self.progress(UNKNOWN)
        elif delivery.provider_limit:
            journal.release(row)
            self._pause_for_provider()
        elif delivery.temporary:
            attempts = row.attempts + 1
            if attempts >= options.max_attempts:
                journal.finish(row.seq, FAILED, delivery.code, delivery.reply)
                self._failed(row, delivery)
            else:
                retry_at = self.clock() + options.retry_delay * 2 ** (attempts - 1)
                journal.finish(row.seq, DEFERRED, delivery.code, delivery.reply, next_attempt_at=retry_at)
                self.progress(DEFERRED)
        else:
            journal.finish(row.seq, FAILED, delivery.code, delivery.reply)
            self._failed(row, delivery)
            if delivery.no_such_user:
                self._mark_bounced(row.subscriber_id)
                with self._state:
                    self.summary_bounced.append(row.email)

    def _mark_bounced(self, subscriber_id: str) -> None:
        """The mailbox does not exist: never mail it again. Someone who already left stays `unsubscribed`."""
        with self.store.change() as people:
            person = people.by_id(subscriber_id)
            if person is not None and person.status == ACTIVE:
                people.set_status(person, BOUNCED)

    def _failed(self, row: Row, delivery: Delivery) -> None:
        with self._state:
            self.summary_failed.append((row.email, delivery.code, delivery.reply))
        self.progress(FAILED)

    # -- waiting ----------------------------------------------------------------------------

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
        """Nothing due for this worker: wait for the next deferred retry if it comes soon enough,
        else end (the run says WAITING if deferred rows are left when all workers are done)."""
        retry_at = self.journal.earliest_retry()
        if retry_at is None:
            return False
        delay = retry_at - self.clock()
        if delay > self.options.max_wait:  # this worker ends; others may still hold rows to send
            return False
        self.progress("waiting")
        self.stop.wait(max(0.0, min(delay, 1.0)))
        return True

    def _pause_for_provider(self) -> None:
        """The provider's hourly cap: wait politely instead of burning through the list."""
        with self._state:
            self.pauses += 1
            too_many = self.pauses > self.options.max_pauses
        if too_many:
            self.halt(PROVIDER_LIMIT)
            return
        self.progress("pause")
        self.stop.wait(self.options.limit_pause)

    def _daily_limit_reached(self) -> bool:
        with self._state:
            reached = self.sent_today >= self.options.daily_limit
        if reached:
            self.halt(DAILY_LIMIT)
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


def plan_send(workspace: Workspace, issue: Issue) -> SendPlan:
    """Check the issue and count who would get it now; refuses an issue that fails check."""
    report = check_issue(workspace, issue)
    if not report.ok or report.rendered is None:
        raise NewsletterError(f"{issue.path.name}: `newsletter check` meldet {len(report.errors)} Fehler; "
                              f"nichts wurde gesendet. Erster Fehler: {report.errors[0]}")
    path = journal_path(workspace.journal_dir, issue.slug)
    journal = SendJournal.existing(path)
    if journal is None:
        _refuse_a_second_send_under_a_new_name(workspace, issue)
        audience = read_audience(SubscriberStore(workspace.subscribers_path))
        if not audience.people:
            raise NewsletterError("keine aktiven, bestätigten Abonnent:innen; nichts zu senden")
        return SendPlan(issue, report, report.rendered, path, len(audience.people), None, audience)
    try:
        counts = journal.counts()
        due = counts[PENDING] + counts[DEFERRED]  # rows left `sending` become `unknown`, not resent
        return SendPlan(issue, report, report.rendered, path, due, counts)
    finally:
        journal.close()


def _refuse_a_second_send_under_a_new_name(workspace: Workspace, issue: Issue) -> None:
    """A renamed issue file would start a fresh journal and mail everyone again: refuse that."""
    for other in sorted(workspace.journal_dir.glob("*.sqlite")):
        journal = SendJournal(other)
        try:
            subject = journal.meta("subject")
        finally:
            journal.close()
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
        store = SubscriberStore(workspace.subscribers_path)
        if plan.audience is None or file_stamp(store.path) != plan.audience.stamp:  # changed since the plan
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
                       retry_delay=smtp.retry_delay, limit_pause=smtp.limit_pause)
