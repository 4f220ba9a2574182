"""The change log in front of the subscriber file: what `serve` answers is durable in milliseconds.

Rewriting subscribers.toml costs time in proportion to the list (about a second at 50,000
people), and an unsubscribe must count the moment it is answered. So `serve` appends each
change (unsubscribe, sign-up, confirmation) to state/changes.sqlite in one short transaction
(WAL, synchronous=FULL: on disk before the answer) and answers. Whoever next holds the file
lock (serve's writer, any CLI command, a send) applies every pending change in one rewrite
(`SubscriberStore.change`), and every reader sees the file with the pending changes on top
(`SubscriberStore.load` and `stream`). The TOML file stays the one the author reads and edits.

Applying is idempotent, because a writer may die between writing the file and clearing the
log: a status that is already set stays as it is, and a sign-up whose event is already in the
history is not recorded twice. A hand edit and a pending change meet by one rule: the pending
change is applied to the file as it is then. An unsubscribe always wins; a confirmation counts
only if its link was issued after the person last left, and a change for someone no longer in
the file (erased, or deleted by hand) is dropped.

Mails a change calls for (the confirmation link, the welcome) are decided while applying and
sent by `serve` afterwards: their rows stay in the log until sent, so a crash loses none.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from newsletter.errors import NewsletterError, SubscriberError
from newsletter.subscribers import (
    ACTIVE,
    BOUNCED,
    BOUNCED_EVENT,
    CONFIRMED,
    INVITED,
    PENDING,
    SIGNUP,
    UNSUBSCRIBED,
    UNSUBSCRIBED_EVENT,
    Event,
    Subscriber,
    SubscriberList,
    SubscriberStore,
    clean_name,
    latest,
    needs_fresh_confirmation,
)

UNSUBSCRIBE, SIGN_UP, CONFIRM, BOUNCE = "unsubscribe", "signup", "confirm", "bounce"
SOURCE = "web"
CONFIRM_MAIL, WELCOME_MAIL = "confirm", "welcome"  # the mails a change calls for: templates/confirm.md, welcome.md

SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    subscriber_id TEXT NOT NULL DEFAULT '',
    at TEXT NOT NULL,
    data TEXT NOT NULL,
    mail TEXT NOT NULL DEFAULT ''   -- set once applied: a mail still to send, as JSON
);
"""


@dataclass(frozen=True)
class Change:
    seq: int
    kind: str
    subscriber_id: str
    at: dt.datetime
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MailDue:
    """A mail an applied change calls for; `serve` builds and sends it."""

    seq: int
    kind: str              # CONFIRM_MAIL or WELCOME_MAIL
    subscriber_id: str
    email: str
    issued_at: int = 0     # the confirmation link's time
    message_id: str = ""   # as the history names it


class ChangeLog:
    """state/changes.sqlite: appended by `serve`, drained under the subscriber file's lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one connection, shared by the threads of `serve`

    @contextlib.contextmanager
    def _connection(self, create: bool = True) -> Iterator[sqlite3.Connection | None]:
        with self._lock:
            if self._db is None:
                if not create and not self.path.exists():
                    yield None
                    return
                try:
                    self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                    db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
                    db.execute("PRAGMA journal_mode=WAL")
                    db.execute("PRAGMA synchronous=FULL")
                    db.execute("PRAGMA secure_delete=ON")  # a row that left (with an address) is overwritten
                    db.executescript(SCHEMA)
                except (sqlite3.Error, OSError) as exc:
                    raise SubscriberError(f"{self.path}: Änderungsprotokoll nicht lesbar ({exc})") from None
                self.path.chmod(0o600)
                self._db = db
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise SubscriberError(f"{self.path}: Änderungsprotokoll: {exc}") from None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def append(self, kind: str, subscriber_id: str, at: dt.datetime, **data: Any) -> int:
        """One change, on disk when this returns (the answer may say it happened)."""
        with self._connection() as db:
            assert db is not None
            cursor = db.execute("INSERT INTO changes (kind, subscriber_id, at, data) VALUES (?, ?, ?, ?)",
                                (kind, subscriber_id, at.isoformat(), json.dumps(data, ensure_ascii=False)))
            return int(cursor.lastrowid or 0)

    def pending(self) -> list[Change]:
        """Changes not yet in the file, oldest first; none if the log was never created."""
        with self._connection(create=False) as db:
            if db is None:
                return []
            rows = db.execute("SELECT seq, kind, subscriber_id, at, data FROM changes WHERE mail = '' ORDER BY seq")
            return [Change(seq, kind, sid, dt.datetime.fromisoformat(at), json.loads(data))
                    for seq, kind, sid, at, data in rows]

    def applied(self, seqs: Iterable[int], mails: Iterable[MailDue]) -> None:
        """After the file was written: applied changes leave the log, those with a mail wait for it."""
        due = {mail.seq: mail for mail in mails}
        with self._connection() as db:
            assert db is not None
            db.execute("BEGIN IMMEDIATE")
            for seq in seqs:
                if seq in due:
                    mail = due[seq]
                    db.execute("UPDATE changes SET mail = ?, data = '{}' WHERE seq = ?",
                               (json.dumps([mail.kind, mail.subscriber_id, mail.email, mail.issued_at,
                                            mail.message_id]), seq))
                else:
                    db.execute("DELETE FROM changes WHERE seq = ?", (seq,))
            db.execute("COMMIT")

    def erase(self, email: str) -> int:
        """Remove every row that names this address (GDPR Art. 17; runs after `forget` applied the log)."""
        with self._connection(create=False) as db:
            if db is None:
                return 0
            needle = json.dumps(email.strip().lower(), ensure_ascii=False)
            count = db.execute("DELETE FROM changes WHERE instr(lower(data), ?) OR instr(lower(mail), ?)",
                               (needle, needle)).rowcount
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # nor do the old pages stay in the WAL file
            return count

    def last_seq(self) -> int:
        """The number of the newest change ever appended: a reader's cache is stale when it grows."""
        with self._connection(create=False) as db:
            if db is None:
                return 0
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
            return int(row[0]) if row else 0

    def mails_due(self) -> list[MailDue]:
        with self._connection(create=False) as db:
            if db is None:
                return []
            rows = db.execute("SELECT seq, mail FROM changes WHERE mail != '' ORDER BY seq").fetchall()
        return [MailDue(seq, *json.loads(mail)) for seq, mail in rows]

    def sent(self, mail: MailDue) -> None:
        """The mail was handed over (or failed and was logged): its row, with the address, goes."""
        with self._connection() as db:
            assert db is not None
            db.execute("DELETE FROM changes WHERE seq = ?", (mail.seq,))


# -- applying ---------------------------------------------------------------------------------

WRITE_PAUSE = 0.5  # seconds between two rewrites by `serve`: a burst costs a few, and a CLI command gets the lock


def apply_forever(subscribers: str, changes: str, wake: Any, stop: Any, parent: int) -> None:
    """`serve`'s writer, in a process of its own: parsing and rewriting a large file there never
    holds up an answer (in the server's process it would hold the interpreter for seconds).

    Applies the log right after a change, then at most every WRITE_PAUSE; ends with `stop`, or
    when the server is gone (killed: its successor's writer takes over).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    log = logging.getLogger(__name__)
    store = SubscriberStore(Path(subscribers), ChangeLog(Path(changes)))
    assert store.changes is not None
    while not stop.is_set() and os.getppid() == parent:
        if not wake.wait(timeout=1):
            continue
        wake.clear()
        try:
            if store.changes.pending():
                with store.change():
                    pass  # taking the lock applies every pending change
        except NewsletterError as exc:  # locked for long, or a broken hand edit: the log keeps everything
            log.error("Änderungen noch nicht in die Datei geschrieben: %s", exc)
            wake.set()
        stop.wait(WRITE_PAUSE)


def apply_changes(people: SubscriberList, changes: Iterable[Change]) -> list[MailDue]:
    """Every change on top of the file as it is; returns the mails they call for."""
    mails = []
    for change in changes:
        mail = APPLY[change.kind](people, change) if change.kind in APPLY else None
        if mail is not None:
            mails.append(mail)
    return mails


def _unsubscribe(people: SubscriberList, change: Change) -> MailDue | None:
    person = people.by_id(change.subscriber_id)
    if person is not None:
        people.set_status(person, UNSUBSCRIBED, Event(UNSUBSCRIBED_EVENT, change.at,
                                                      source=change.data.get("source", "")))
    return None


def _sign_up(people: SubscriberList, change: Change) -> MailDue | None:
    """Decided here, not when answered, so the answer does the same work whoever is listed.

    Someone who left stays left, their record untouched, until the mailbox owner confirms: a
    stranger typing the address into the form changes nothing but sending this mail.
    """
    data = change.data
    email = data["email"]
    if people.is_suppressed(email):
        return None
    signed = Event(SIGNUP, change.at, ip=data.get("ip", ""), page=data.get("page", ""),
                   consent_text=data.get("consent_text", ""), consent_version=data.get("consent_version", ""))
    details: dict[str, Any] = {"signup_ip": signed.ip, "signup_page": signed.page, "consent_text": signed.consent_text,
               "consent_version": signed.consent_version}
    person = people.get(email)
    message_id = data.get("message_id", "")
    if person is None:
        try:
            person = people.add(email, data.get("name", ""), status=PENDING, source=SOURCE, event=signed,
                                subscribed_at=change.at, **details)
        except SubscriberError:  # not an address after all (the form checked it): nothing to do
            return None
    elif person.status == ACTIVE:
        return None
    elif message_id and any(e.kind == INVITED and e.message_id == message_id for e in person.events):
        # Applied before the log was cleared (its mail's Message-ID is in the history): only the mail is due.
        return MailDue(change.seq, CONFIRM_MAIL, person.id, person.email, int(change.at.timestamp()), message_id)
    elif person.status == PENDING:  # a second try: this sign-up's consent is the one to confirm
        if clean_name(data.get("name", "")):
            people.set_name(person, data["name"])
        person.source, person.subscribed_at = SOURCE, change.at
        for key, value in details.items():
            setattr(person, key, value)
        people.record(person, signed)
    if person.status == PENDING:
        person.invited_at = change.at
        people.record(person, Event(INVITED, change.at, message_id=message_id))
    return MailDue(change.seq, CONFIRM_MAIL, person.id, person.email, int(change.at.timestamp()), message_id)


def _confirm(people: SubscriberList, change: Change) -> MailDue | None:
    """The double opt-in, with the time, IP and consent text in force when the link was posted."""
    data = change.data
    person = people.by_id(change.subscriber_id)
    issued = dt.datetime.fromtimestamp(data["issued_at"], dt.UTC)
    if person is None or not may_confirm(person, issued):
        return None
    if person.status == ACTIVE and not needs_fresh_confirmation(person):
        return None
    welcome = person.status != ACTIVE
    if person.status not in (PENDING, ACTIVE):  # the sign-up is known by its link alone
        person.source, person.subscribed_at = SOURCE, issued
        person.signup_ip, person.signup_page = "", ""
        person.consent_text, person.consent_version = "", ""
        people.record(person, Event(SIGNUP, issued, source="Bestätigungslink"))
    record_confirmation(people, person, data.get("ip", ""), data["consent_text"], data["consent_version"],
                        at=change.at)
    if welcome and data.get("welcome"):
        return MailDue(change.seq, WELCOME_MAIL, person.id, person.email)
    return None


def _bounce(people: SubscriberList, change: Change) -> MailDue | None:
    """A send's 5xx for a mailbox that does not exist: never mailed again. Someone who left stays left."""
    person = people.by_id(change.subscriber_id)
    if person is not None and person.status == ACTIVE:
        data = change.data
        people.set_status(person, BOUNCED, Event(BOUNCED_EVENT, change.at, source=data.get("source", ""),
                                                 issue=data.get("issue", ""), code=data.get("code", ""),
                                                 diagnostic=data.get("diagnostic", "")))
    return None


APPLY = {UNSUBSCRIBE: _unsubscribe, SIGN_UP: _sign_up, CONFIRM: _confirm, BOUNCE: _bounce}


def may_confirm(person: Subscriber, issued: dt.datetime) -> bool:
    """Pending people may confirm; those who left only with a link issued after they left.

    Strictly after: a link from the same second as the leave counts as older (times are kept
    to the second), so a link sent before an unsubscribe can never bring the person back.
    A leave an import dated to the day alone counts until that day's end.
    """
    if person.status in (PENDING, ACTIVE):
        return True
    left = person.unsubscribed_at if person.status == UNSUBSCRIBED else person.bounced_at
    return left is None or issued > latest(left)


def record_confirmation(people: SubscriberList, person: Subscriber, ip: str, text: str, version: str,
                        at: dt.datetime) -> None:
    """The double opt-in: confirmed at `at` from `ip`, under the consent text and version then in force.

    A person without a consent text of their own (added by hand or imported, then invited)
    gets this one: it is what they agreed to by confirming.
    """
    if not person.consent_text:
        person.consent_text, person.consent_version = text, version
    person.confirmed_at, person.confirm_ip = at, ip
    confirmed = Event(CONFIRMED, at, ip=ip, consent_text=text, consent_version=version)
    if not people.set_status(person, ACTIVE, confirmed):  # already active, now with its proof
        people.record(person, confirmed)
