"""The subscriber file: people, their status and consent, written atomically under a lock.

subscribers/subscribers.toml stays readable and hand-editable. Every change goes through
`SubscriberStore.change()`: take the lock, read the current file, change it, write a temp
file, fsync, keep the old file as the one backup, rename, fsync the folder. A crash at any
point leaves the old or the new file, and concurrent writers never lose each other's changes.

Each person carries, besides the current state (status, times, consent), an append-only
history of `Event`s written as `[[subscriber.event]]` tables: what happened when, as the
evidence of consent that a supervisory authority may ask for. Events are only ever appended.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import hashlib
import itertools
import os
import re
import secrets
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from zoneinfo import ZoneInfo

import tomli as toml_reader  # the compiled build of the parser the standard library ships: ~3× faster
import tomli_w
from filelock import FileLock, Timeout

from newsletter.config import toml_error_text
from newsletter.errors import SubscriberError
from newsletter.statuses import ACTIVE, BOUNCED, PENDING, STATUS_LABELS, STATUSES, UNSUBSCRIBED

if TYPE_CHECKING:
    from newsletter.changes import ChangeLog

LOCK_TIMEOUT = 60.0
PLAUSIBLE_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
# Ids travel in unsubscribe links; tokens.py accepts exactly these characters.
VALID_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
HEADER = """\
# Abonnent:innen des Newsletters. Von Hand bearbeitbar; das Programm prüft die Datei
# beim Lesen und überschreibt nie eine Datei, die es nicht lesen konnte.
# status: pending (noch nicht bestätigt), active, unsubscribed, bounced.

"""


# Naive times written by people in Germany (and the dates of a whole day) mean this zone.
BERLIN = ZoneInfo("Europe/Berlin")
# A time the tool records itself is aware (UTC); one taken from an import may be a date alone
# (15.03.2024: the file gives no time of day, and none is made up).
Moment = dt.datetime | dt.date


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def earliest(value: Moment) -> dt.datetime:
    """An aware time to compare and sort by; a date alone counts from its first second in Germany."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.combine(value, dt.time(), BERLIN)


def latest(value: Moment) -> dt.datetime:
    """Like `earliest`, but a date alone counts to its last second: for comparing against a leave."""
    if isinstance(value, dt.datetime):
        return earliest(value)
    return dt.datetime.combine(value + dt.timedelta(days=1), dt.time(), BERLIN)


def month_of(value: Moment) -> str:
    """"YYYY-MM" in German local time (a date alone is its own month)."""
    return (value.astimezone(BERLIN) if isinstance(value, dt.datetime) else value).strftime("%Y-%m")


# Event kinds. New kinds may be added (bounces with their details, complaints …): a reader
# shows a kind it does not know by its name instead of refusing the file.
SIGNUP = "signup"              # the form of `serve`: ip, page, consent_text/version
INVITED = "invited"            # a confirmation mail went out: message_id
CONFIRMED = "confirmed"        # the link in it was confirmed: ip, consent_text/version in force
ADDED = "added"                # `subscribers add`: status, source (the author's own word)
IMPORTED = "imported"          # a row of an import file: file, format, line, what the file states
UNSUBSCRIBED_EVENT = "unsubscribed"  # left: source (Abmeldelink, von Hand …)
BOUNCED_EVENT = "bounced"      # undeliverable: issue, code, diagnostic where known
BOUNCE = "bounce"              # a bounce that changed no status (soft, a refusal of her sending): issue, code
STATUS_EVENTS: dict[str, str] = {PENDING: "pending", ACTIVE: CONFIRMED, UNSUBSCRIBED: UNSUBSCRIBED_EVENT,
                 BOUNCED: BOUNCED_EVENT}
VALID_KIND = re.compile(r"[a-z][a-z0-9_]{0,39}")
KNOWN_KINDS = frozenset({SIGNUP, INVITED, CONFIRMED, ADDED, IMPORTED, BOUNCE, *STATUS_EVENTS.values()})


@dataclass(slots=True)
class Event:
    """One thing that happened to a subscription, stored once and never rewritten.

    `at` is when it happened here (for an import: when the file was imported). What an
    imported file states about the past (`signup_at`, `confirmed_at` …) is kept in the fields
    of its `imported` event exactly as given, and stays empty where the file says nothing.
    Nothing changes an event after it is made (not frozen only because a frozen dataclass
    takes four times as long to build, and a file holds several per person).
    """

    kind: str
    at: dt.datetime
    status: str = ""           # the status the event left behind (added, imported)
    source: str = ""           # how or where from: "Abmeldelink", "von Hand", a service's own source
    ip: str = ""
    page: str = ""
    consent_version: str = ""
    consent_text: str = ""
    message_id: str = ""       # invited: the confirmation mail's Message-ID
    file: str = ""             # imported: the file's name (inside a zip: zip/member)
    format: str = ""           # imported: the recognised format, e.g. "Mailchimp"
    line: int = 0              # imported: the row's line in the file (the header is line 1)
    file_status: str = ""      # imported: the status as the file gives it
    signup_at: Moment | None = None     # imported: what the file states, as stated
    signup_ip: str = ""
    confirmed_at: Moment | None = None
    confirm_ip: str = ""
    unsubscribed_at: Moment | None = None
    bounced_at: Moment | None = None
    reason: str = ""           # imported: why the person left or was cleaned, as the file says
    issue: str = ""            # bounced: the issue it bounced on
    code: str = ""             # bounced: the status code, e.g. 5.1.1
    diagnostic: str = ""       # bounced: the server's words
    note: str = ""

    def to_toml(self) -> dict[str, Any]:
        """The fields worth writing, in order (empty ones are left out)."""
        return {name: value for name in EVENT_ORDER
                if (value := getattr(self, name)) is not None and value != "" and value != 0}

    def to_json(self) -> dict[str, Any]:
        """The fields that are set, times as ISO 8601 text."""
        return {name: value.isoformat() if isinstance(value, dt.date) else value
                for name, value in self.to_toml().items()}

    @property
    def has_doi_evidence(self) -> bool:
        """An import stating both when the person signed up and when they confirmed."""
        return self.kind == IMPORTED and self.signup_at is not None and self.confirmed_at is not None


EVENT_ORDER = tuple(f.name for f in fields(Event))
EVENT_FIELDS = frozenset(EVENT_ORDER)
EVENT_MOMENTS = frozenset({"signup_at", "confirmed_at", "unsubscribed_at", "bounced_at"})
EVENT_TEXTS = EVENT_FIELDS - EVENT_MOMENTS - {"at", "line"}


@dataclass
class Subscriber:
    id: str
    email: str
    name: str = ""
    status: str = PENDING
    source: str = ""
    subscribed_at: Moment | None = None
    confirmed_at: Moment | None = None
    unsubscribed_at: Moment | None = None
    bounced_at: Moment | None = None
    invited_at: dt.datetime | None = None  # when the last confirmation link went out
    consent_version: str = ""
    consent_text: str = ""
    signup_ip: str = ""
    signup_page: str = ""
    confirm_ip: str = ""
    note: str = ""
    events: list[Event] = field(default_factory=list)  # written as [[subscriber.event]]

    @property
    def key(self) -> str:
        return email_key(self.email)

    @property
    def receives_mail(self) -> bool:
        """Active and confirmed: the only people an issue is sent to."""
        return self.status == ACTIVE

    def to_toml(self) -> dict[str, Any]:
        """The fields worth writing, in file order (empty ones are left out), then the events."""
        values = ((name, getattr(self, name)) for name in SCALAR_ORDER)
        data = {name: value for name, value in values if value is not None and value != ""}
        if self.events:
            data["event"] = [event.to_toml() for event in self.events]
        return data

    def to_json(self) -> dict[str, Any]:
        """Every field, timestamps as ISO 8601 text and None where unknown, events as a list."""
        values = ((name, getattr(self, name)) for name in SCALAR_ORDER)
        data = {name: value.isoformat() if isinstance(value, dt.date) else value for name, value in values}
        data["events"] = [event.to_json() for event in self.events]
        return data


FIELD_ORDER = tuple(f.name for f in fields(Subscriber))
SCALAR_ORDER = tuple(name for name in FIELD_ORDER if name != "events")
# The keys a [[subscriber]] table may hold; its events come as the sub-tables [[subscriber.event]].
FIELD_NAMES = frozenset(SCALAR_ORDER) | {"event"}
DATE_FIELDS = frozenset({"subscribed_at", "confirmed_at", "unsubscribed_at", "bounced_at", "invited_at"})
# invited_at is only ever recorded by the tool itself, so it is always a time, never a date alone.
TIME_ONLY_FIELDS = frozenset({"invited_at"})


def proof_of_consent(person: Subscriber) -> str:
    """How this person's consent is evidenced: DOI_PROVEN, NO_PROOF, DECLARED or UNCONFIRMED.

    A double opt-in is proven by a confirmation through this tool (web or `invite`) or by an
    import stating both the sign-up and the confirmation time. An import without both is
    "kein DOI-Nachweis" (Mailchimp marks a contact an admin added with a confirmation time
    but no opt-in). Records older than the event history are judged by their fields.
    """
    events = person.events
    if any(e.kind == CONFIRMED or e.has_doi_evidence for e in events):
        return DOI_PROVEN
    if any(e.kind == IMPORTED for e in events):
        return NO_PROOF
    if any(e.kind == SIGNUP for e in events):
        return UNCONFIRMED
    if events:
        return DECLARED
    if person.source == "web":
        return DOI_PROVEN if person.confirmed_at and person.confirm_ip else UNCONFIRMED
    # An import by an older version wrote the moment of the import as the confirmation.
    return NO_PROOF if person.source.startswith("Import ") else DECLARED


DOI_PROVEN, NO_PROOF, DECLARED, UNCONFIRMED = "doi", "missing", "declared", "unconfirmed"
PROOF_LABELS = {
    DOI_PROVEN: "Double-Opt-in belegt",
    NO_PROOF: "kein DOI-Nachweis",
    DECLARED: "von Hand eingetragen",
    UNCONFIRMED: "Anmeldung noch nicht bestätigt",
}


def needs_fresh_confirmation(person: Subscriber) -> bool:
    """Who `subscribers invite --without-proof` asks: still on the list, consent not evidenced."""
    return person.status in (PENDING, ACTIVE) and proof_of_consent(person) == NO_PROOF


def new_id() -> str:
    """A random, URL-safe id that never changes; it is what unsubscribe links carry."""
    return secrets.token_urlsafe(12)


def normalize_email(text: str) -> str:
    """Validate an address (syntax only, works offline) and return its normalised form."""
    from email_validator import EmailNotValidError, validate_email  # 40 ms: only when an address is added

    try:
        result = validate_email(text.strip(), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        raise SubscriberError(f"„{text.strip()}“ ist keine gültige E-Mail-Adresse") from None
    return result.normalized


def email_key(email: str) -> str:
    """Addresses are stored as typed but compared without regard to case."""
    return email.strip().lower()


def clean_name(name: str) -> str:
    """A name is data: line breaks and control characters are flattened to spaces."""
    return " ".join(CONTROL.sub(" ", name).split())[:200]


@dataclass
class SubscriberList:
    """The whole file in memory: subscribers in file order plus the suppression list."""

    subscribers: list[Subscriber] = field(default_factory=list)
    salt: str = ""
    suppressed: set[str] = field(default_factory=set)
    changed: bool = False
    # Set when someone's record was deleted: that write keeps no backup still holding them.
    dropped: bool = False

    def __post_init__(self) -> None:
        self._by_key = {s.key: s for s in self.subscribers}
        self._by_id = {s.id: s for s in self.subscribers}

    def __len__(self) -> int:
        return len(self.subscribers)

    def __iter__(self) -> Iterator[Subscriber]:
        return iter(self.subscribers)

    def get(self, email: str) -> Subscriber | None:
        return self._by_key.get(email_key(email))

    def by_id(self, subscriber_id: str) -> Subscriber | None:
        return self._by_id.get(subscriber_id)

    def require(self, email: str) -> Subscriber:
        """The person with this address, or an error that also says if they were erased."""
        found = self.get(email)
        if found is None:
            if self.is_suppressed(email):
                raise SubscriberError(
                    f"{email.strip()}: nicht in der Liste; die Adresse wurde gelöscht "
                    "(gespeichert ist nur ein Prüfwert, damit sie nicht wieder hineinkommt)")
            raise SubscriberError(f"{email.strip()}: nicht in der Liste")
        return found

    def with_status(self, status: str | None) -> list[Subscriber]:
        return [s for s in self.subscribers if status is None or s.status == status]

    def suppression_hash(self, email: str) -> str:
        if not self.salt:
            self.salt = secrets.token_hex(16)
            self.changed = True
        return hashlib.sha256(f"{self.salt}:{email_key(email)}".encode()).hexdigest()

    def is_suppressed(self, email: str) -> bool:
        """True if this address was erased (forget); imports and sign-ups must not bring it back."""
        return bool(self.suppressed) and self.suppression_hash(email) in self.suppressed

    def add(self, email: str, name: str = "", status: str = PENDING, source: str = "", *,
            allow_erased: bool = False, subscriber_id: str | None = None, event: Event | None = None,
            stamp: bool = True, **details: Any) -> Subscriber:
        """Add a new person; SubscriberError if the address is invalid, listed or erased.

        An erased address comes back only with allow_erased (the person asked for it
        explicitly, e.g. a new confirmed sign-up); its suppression hash is then dropped.
        `event` is the first entry of the history (by default: added by hand). With `stamp`
        a missing subscribed_at is now, and an active person counts as confirmed now: right
        for a person entered today, wrong for an import, which keeps exactly the times it has.
        """
        _check_status(status)
        address = normalize_email(email)
        existing = self.get(address)
        if existing is not None:
            raise SubscriberError(
                f"{address}: steht schon in der Liste (Status: {STATUS_LABELS[existing.status]})")
        if self.is_suppressed(address):
            if not allow_erased:
                raise SubscriberError(
                    f"{address}: wurde auf Wunsch gelöscht und wird nicht ohne Weiteres "
                    "wieder aufgenommen")
            self.suppressed.discard(self.suppression_hash(address))
        # A restored id (an export moved to a new list) keeps old unsubscribe links working.
        keep = subscriber_id if subscriber_id and VALID_ID.fullmatch(subscriber_id) else None
        subscriber = Subscriber(id=keep or new_id(), email=address, name=clean_name(name), status=status,
                                source=source, **details)
        if stamp:
            subscriber.subscribed_at = subscriber.subscribed_at or now()
            if status == ACTIVE and subscriber.confirmed_at is None:
                subscriber.confirmed_at = subscriber.subscribed_at
        while subscriber.id in self._by_id:  # pragma: no cover - 96 random bits
            subscriber.id = new_id()
        subscriber.events = [*subscriber.events,
                             event or Event(ADDED, now(), status=status, source=source)]
        self.subscribers.append(subscriber)
        self._by_key[subscriber.key] = subscriber
        self._by_id[subscriber.id] = subscriber
        self.changed = True
        return subscriber

    def record(self, subscriber: Subscriber, event: Event) -> None:
        """Append one event to someone's history; nothing already stored is touched."""
        subscriber.events.append(event)
        self.changed = True

    def set_status(self, subscriber: Subscriber, status: str, event: Event | None = None) -> bool:
        """Move someone to a new status, with its timestamp and an event; False if nothing changed.

        Without `event` the change is recorded as happening now (a confirmation, an unsubscribe,
        a bounce). Only a `confirmed` event sets confirmed_at: an import that makes someone active
        on the author's word records that, not a confirmation. Coming back to active after
        leaving or bouncing counts as a new confirmation.
        """
        _check_status(status)
        if subscriber.status == status:
            return False
        event = event or Event(STATUS_EVENTS[status], now())
        previous, subscriber.status = subscriber.status, status
        if status == ACTIVE and event.kind == CONFIRMED:
            if previous != PENDING or subscriber.confirmed_at is None:
                subscriber.confirmed_at = event.at
        elif status == UNSUBSCRIBED:
            subscriber.unsubscribed_at = event.unsubscribed_at or event.at
        elif status == BOUNCED:
            subscriber.bounced_at = event.bounced_at or event.at
        self.record(subscriber, event)
        return True

    def set_name(self, subscriber: Subscriber, name: str) -> bool:
        """Give someone a (flattened) name; False if it is the one they have."""
        name = clean_name(name)
        if subscriber.name == name:
            return False
        subscriber.name = name
        self.changed = True
        return True

    def forget(self, email: str) -> Subscriber:
        """Erase a person (GDPR Art. 17); only a salted hash stays, so no import brings them back."""
        subscriber = self.require(email)
        self.suppressed.add(self.suppression_hash(subscriber.email))
        self.remove(subscriber)
        return subscriber

    def remove(self, subscriber: Subscriber) -> None:
        """Drop a record entirely (used for forgetting and for expired sign-ups)."""
        self.subscribers.remove(subscriber)
        del self._by_key[subscriber.key]
        del self._by_id[subscriber.id]
        self.changed = True
        self.dropped = True

    def to_toml(self) -> str:
        """The whole file. Written table by table, so every event is a [[subscriber.event]] table
        (tomli-w alone would write short ones inline and long ones as tables); the bytes of a
        person without events are exactly what tomli-w writes for the whole list."""
        tables = []
        for subscriber in self.subscribers:
            record = subscriber.to_toml()
            events = record.pop("event", ())
            tables.append("[[subscriber]]\n" + tomli_w.dumps(record))
            tables.extend("[[subscriber.event]]\n" + tomli_w.dumps(event) for event in events)
        if self.suppressed:
            tables.append(tomli_w.dumps({"suppression": {"salt": self.salt, "hashes": sorted(self.suppressed)}}))
        return HEADER + "\n".join(tables)


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise SubscriberError(f"Status „{status}“ ist unbekannt (erlaubt: {', '.join(STATUSES)})")


class SubscriberStore:
    """subscribers.toml on disk, with the pending changes of its change log on top.

    Reads need no lock (renames are atomic); changes take it, and apply what the log holds.
    """

    def __init__(self, path: Path | str, changes: ChangeLog | None = None) -> None:
        self.path = Path(path)
        self.changes = changes
        self.backup_path = self.path.with_name(self.path.name + ".bak")
        self.lock = FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT)
        self._temp_prefix = f".{self.path.name}."

    def load(self) -> SubscriberList:
        """The file as the author reads it, with every change answered but not yet written."""
        people = self.load_file()
        if self.changes is not None:
            from newsletter.changes import apply_changes

            apply_changes(people, self.changes.pending())
        return people

    def load_file(self) -> SubscriberList:
        """The file alone."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return SubscriberList()
        except OSError as exc:
            raise SubscriberError(f"{self.path}: kann nicht gelesen werden ({exc.strerror})") from None
        return parse_subscribers(self.path, raw)

    def active(self) -> Iterator[Subscriber]:
        """The people an issue goes to, in file order, read one at a time (see `stream`)."""
        return (s for s in self.stream() if s.receives_mail)

    def stream(self) -> Iterator[Subscriber]:
        """Every subscriber in file order, parsed one [[subscriber]] table at a time.

        A send reads the list several times; at 100,000 people a whole `load()` holds ~300 MB,
        this holds one table. Whatever does not split cleanly into tables (a hand-written
        multi-line string, a duplicate, a broken record) goes to the whole-file parse of the
        same open file (so a concurrent rewrite cannot shift it), which either reads it after
        all or raises the error with the right line number. Pending changes of a listed person
        (an unsubscribe just answered) are applied; pending sign-ups are not listed here.
        """
        by_id: dict[str, list] = {}
        if self.changes is not None:
            for pending in self.changes.pending():
                by_id.setdefault(pending.subscriber_id, []).append(pending)
        by_id.pop("", None)
        people = self._stream_file()
        if not by_id:
            yield from people
            return
        from newsletter.changes import apply_changes

        for subscriber in people:
            if subscriber.id in by_id:
                apply_changes(SubscriberList([subscriber]), by_id[subscriber.id])
            yield subscriber

    def _stream_file(self) -> Iterator[Subscriber]:
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise SubscriberError(f"{self.path}: kann nicht gelesen werden ({exc.strerror})") from None
        with handle:
            yielded = 0
            try:
                for subscriber in _tables(handle):
                    yield subscriber
                    yielded += 1
            except _NotStreamable:
                handle.seek(0)
                yield from parse_subscribers(self.path, handle.read()).subscribers[yielded:]

    @contextlib.contextmanager
    def change(self) -> Iterator[SubscriberList]:
        """Lock, read the current file, let the caller change it, write it back atomically.

        The change log's pending changes are applied first and leave the log once the file
        is written. If the file cannot be parsed, the error is raised before the caller sees
        anything and nothing is written. If the caller raises, nothing is written either.
        """
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self.lock.acquire()
        except Timeout:
            raise SubscriberError(f"{self.path}: gesperrt; läuft gerade ein anderer Vorgang?") from None
        try:
            current = self.load_file()
            pending = self.changes.pending() if self.changes is not None else []
            mails = []
            if pending:
                from newsletter.changes import apply_changes

                mails = apply_changes(current, pending)
            yield current
            if current.changed:
                self._write(current.to_toml().encode(), keep_backup=not current.dropped)
            if pending:
                assert self.changes is not None
                self.changes.applied((change.seq for change in pending), mails)
        finally:
            self.lock.release()

    def update_status(self, subscriber_id: str, status: str, source: str = "") -> Subscriber | None:
        """Set one person's status under the lock in one call; None if the id is unknown.

        For the unsubscribe link and for bounces: the file is re-read under the lock, so a
        change made meanwhile by anyone else is kept. `source` says how, for the history.
        """
        _check_status(status)
        with self.change() as people:
            subscriber = people.by_id(subscriber_id)
            if subscriber is not None:
                people.set_status(subscriber, status, Event(STATUS_EVENTS[status], now(), source=source))
            return subscriber

    def add(self, email: str, name: str = "", status: str = PENDING, source: str = "",
            **options: Any) -> Subscriber:
        """Add one person under the lock (see SubscriberList.add)."""
        with self.change() as people:
            return people.add(email, name, status, source, **options)

    def unsubscribe(self, email: str) -> tuple[Subscriber, bool]:
        """Mark someone unsubscribed, keeping their consent history; False if they already were."""
        with self.change() as people:
            subscriber = people.require(email)
            return subscriber, people.set_status(subscriber, UNSUBSCRIBED,
                                                 Event(UNSUBSCRIBED_EVENT, now(), source="von Hand"))

    def forget(self, email: str) -> Subscriber:
        """Erase someone under the lock; returns the record as it was, for the confirmation."""
        with self.change() as people:
            return people.forget(email)

    def _write(self, data: bytes, keep_backup: bool = True) -> None:
        """Temp file, fsync, backup, rename, fsync the folder. Called with the lock held."""
        folder = self.path.parent
        self._remove_leftovers()
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=self._temp_prefix, suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if keep_backup and self.path.exists():
                self._keep_backup(f"{tmp}.bak")
            elif not keep_backup:
                # The old version (and an older backup) may hold someone just erased.
                with contextlib.suppress(FileNotFoundError):
                    self.backup_path.unlink()
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                Path(tmp).unlink()
            raise
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _keep_backup(self, staging: str) -> None:
        """The current file becomes the backup, itself replaced atomically."""
        try:
            os.link(self.path, staging)
        except OSError:  # a filesystem without hard links: copy instead
            shutil.copy2(self.path, staging)
        try:
            os.replace(staging, self.backup_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                Path(staging).unlink()
            raise

    def _remove_leftovers(self) -> None:
        """Temp files of a writer that was killed; safe to delete because we hold the lock."""
        for leftover in self.path.parent.glob(f"{glob.escape(self._temp_prefix)}*.tmp*"):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def parse_subscribers(path: Path, raw: bytes) -> SubscriberList:
    """Parse and validate the file; any problem names the line so a hand edit can be fixed."""
    text = ""
    try:
        text = raw.decode("utf-8-sig")  # a BOM from a hand edit in an old Windows editor is fine
        data = toml_reader.loads(text)
    except UnicodeDecodeError:
        raise SubscriberError(f"{path}: ist nicht als UTF-8 gespeichert (im Editor „UTF-8“ wählen)") from None
    except toml_reader.TOMLDecodeError as exc:
        raise SubscriberError(f"{path}: {toml_error_text(exc, source=text)}") from None
    unknown = set(data) - {"subscriber", "suppression"}
    if unknown:
        name = sorted(unknown)[0]
        raise SubscriberError(f"{path}:{_line_of(text, name)}: unbekannter Eintrag „{name}“ "
                              "(erwartet [[subscriber]] oder [suppression])")
    records = data.get("subscriber", [])
    if not isinstance(records, list):
        raise SubscriberError(f"{path}: „subscriber“ muss als [[subscriber]] geschrieben werden")
    people: list[Subscriber] = []
    first_index: dict[str, int] = {}
    ids: set[str] = set()
    for index, record in enumerate(records):
        problem = _record_problem(record)
        if problem is None:
            subscriber = Subscriber(**record)
            key = subscriber.key
            if key in first_index:
                problem = (f"{subscriber.email} steht doppelt "
                           f"(auch Zeile {_record_line(text, first_index[key])})")
            elif subscriber.id in ids:
                problem = f"id „{subscriber.id}“ kommt doppelt vor"
        if isinstance(problem, EventProblem):
            raise SubscriberError(f"{path}:{_event_line(text, index, problem.position)}: "
                                  f"[[subscriber.event]] {problem}")
        if problem is not None:
            raise SubscriberError(f"{path}:{_record_line(text, index)}: {problem}")
        first_index[key] = index
        ids.add(subscriber.id)
        people.append(subscriber)
    salt, hashes = _suppression_from(path, text, data.get("suppression", {}))
    return SubscriberList(subscribers=people, salt=salt, suppressed=hashes)


SUBSCRIBER_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*subscriber[ \t]*\]\]", re.MULTILINE)


def _record_line(text: str, index: int) -> int:
    """The line of the index-th `[[subscriber]]` header; only needed when reporting an error."""
    for number, match in enumerate(SUBSCRIBER_HEADER.finditer(text)):
        if number == index:
            return text.count("\n", 0, match.start()) + 1
    return 0


EVENT_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*subscriber[ \t]*\.[ \t]*event[ \t]*\]\]", re.MULTILINE)


def _event_line(text: str, index: int, event: int) -> int:
    """The line of a person's event-th [[subscriber.event]] (or of the person, if written inline)."""
    starts = [match.start() for match in SUBSCRIBER_HEADER.finditer(text)]
    if index >= len(starts):
        return 0
    end = starts[index + 1] if index + 1 < len(starts) else len(text)
    headers = list(EVENT_HEADER.finditer(text, starts[index], end))
    offset = headers[event].start() if event < len(headers) else starts[index]
    return text.count("\n", 0, offset) + 1


def _line_of(text: str, key: str) -> int:
    """The first line that starts the table or key `key`, for errors outside [[subscriber]]."""
    match = re.search(rf"^[ \t]*(\[+[ \t]*)?{re.escape(key)}\b", text, re.MULTILINE)
    return text.count("\n", 0, match.start()) + 1 if match else 0


def _suppression_from(path: Path, text: str, table: Any) -> tuple[str, set[str]]:
    def error(message: str) -> SubscriberError:
        return SubscriberError(f"{path}:{_line_of(text, 'suppression')}: {message}")

    if not isinstance(table, dict):
        raise error("„suppression“ muss eine Tabelle [suppression] sein")
    unknown = set(table) - {"salt", "hashes"}
    if unknown:
        raise error(f"unbekannter Schlüssel „{sorted(unknown)[0]}“ in [suppression]")
    salt, hashes = table.get("salt", ""), table.get("hashes", [])
    if not isinstance(salt, str) or not isinstance(hashes, list) \
            or not all(isinstance(h, str) for h in hashes):
        raise error("[suppression] braucht salt (Text) und hashes (Liste von Texten)")
    if hashes and not salt:
        raise error("[suppression] salt fehlt; ohne ihn sind die Prüfwerte wertlos")
    return salt, set(hashes)


# A person's own sub-tables ([[subscriber.event]]) belong to the table before them.
SUB_TABLE = re.compile(rb"[ \t]*\[\[[ \t]*subscriber[ \t]*\.")


def _tables(handle: BinaryIO) -> Iterator[Subscriber]:
    """The subscribers of an open file, one table at a time; _NotStreamable if in doubt."""
    emails: set[str] = set()
    ids: set[str] = set()
    table: list[bytes] = []
    for line in itertools.chain(handle, [b"[end]"]):
        if line.lstrip(b" \t").startswith(b"[") and table and not SUB_TABLE.match(line):
            subscriber = _one_table(b"".join(table))
            if subscriber is not None:
                if subscriber.key in emails or subscriber.id in ids:
                    raise _NotStreamable
                emails.add(subscriber.key)
                ids.add(subscriber.id)
                yield subscriber
            table = []
        table.append(line)


class _NotStreamable(Exception):
    """The file needs the careful whole-file parse."""


def _one_table(raw: bytes) -> Subscriber | None:
    """One [[subscriber]] table, or None for comments and [suppression]."""
    try:
        data = toml_reader.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, toml_reader.TOMLDecodeError):
        raise _NotStreamable from None
    if not data or set(data) == {"suppression"}:
        return None
    records = data.get("subscriber")
    if set(data) != {"subscriber"} or not isinstance(records, list) or len(records) != 1 \
            or _record_problem(records[0]) is not None:
        raise _NotStreamable
    return Subscriber(**records[0])


class EventProblem(str):
    """What is wrong with one event of a record, and which of its events it is."""

    position: int

    def __new__(cls, message: str, position: int) -> EventProblem:
        problem = super().__new__(cls, message)
        problem.position = position
        return problem


def _record_problem(record: Any) -> str | None:
    """What is wrong with one [[subscriber]] table, or None; hand edits are repaired where harmless.

    Kept lean: it runs for every person on every read. Its events are turned into `Event`s here.
    """
    if not isinstance(record, dict):
        return "„subscriber“ muss als [[subscriber]] geschrieben werden"
    unknown = record.keys() - FIELD_NAMES
    if unknown:
        return f"unbekannter Schlüssel „{sorted(unknown)[0]}“"
    for key, value in record.items():
        if type(value) is str:
            if key in DATE_FIELDS:
                return f"{key} muss Datum und Uhrzeit sein, z. B. 2026-11-01T10:00:00Z"
        elif key == "event":
            continue
        elif key not in DATE_FIELDS:
            return f"{key} muss Text in Anführungszeichen sein"
        elif not isinstance(value, dt.date) or (key in TIME_ONLY_FIELDS and not isinstance(value, dt.datetime)):
            return f"{key} muss Datum und Uhrzeit sein, z. B. 2026-11-01T10:00:00Z"
        elif isinstance(value, dt.datetime) and value.tzinfo is None:
            record[key] = value.replace(tzinfo=dt.UTC)
    for key in ("id", "email"):
        if not record.get(key):
            return f"{key} fehlt"
    if not VALID_ID.fullmatch(record["id"]):
        return f"id „{record['id']}“ darf nur A–Z, a–z, 0–9, - und _ enthalten"
    if record.get("status", PENDING) not in STATUSES:
        return f"status „{record['status']}“ ist unbekannt (erlaubt: {', '.join(STATUSES)})"
    # A light check: full validation happened when the address was added, and is too slow
    # to repeat for 100,000 people on every read.
    if not PLAUSIBLE_EMAIL.fullmatch(record["email"]):
        return f"„{record['email']}“ ist keine gültige E-Mail-Adresse"
    name = record.get("name")
    if name and not name.isprintable():  # a hand edit: a name never carries a line break onward
        record["name"] = clean_name(name)
    if "event" in record:
        events = record.pop("event")
        if not isinstance(events, list):
            return "event muss als [[subscriber.event]] geschrieben werden"
        converted = []
        for index, raw in enumerate(events):
            if isinstance(problem := event_problem(raw), str):
                return EventProblem(problem, index)
            converted.append(problem)
        record["events"] = converted
    return None


def event_problem(raw: Any) -> Event | str:
    """One stored event as an `Event`, or what is wrong with it (German, for the error line).

    Kept lean like `_record_problem`: a file holds several events per person.
    """
    if not isinstance(raw, dict):
        return "muss eine Tabelle sein"
    if not EVENT_FIELDS.issuperset(raw):
        return f"unbekannter Schlüssel „{sorted(raw.keys() - EVENT_FIELDS)[0]}“"
    kind = raw.get("kind")
    if type(kind) is not str or (kind not in KNOWN_KINDS and not VALID_KIND.fullmatch(kind)):
        return "kind fehlt oder ist ungültig (z. B. kind = \"confirmed\")"
    if not isinstance(raw.get("at"), dt.datetime):
        return "at muss Datum und Uhrzeit sein, z. B. 2026-11-01T10:00:00Z"
    for key, value in raw.items():
        if type(value) is str:
            if key in EVENT_TEXTS:
                continue
            return f"{key} muss {'eine Zeilennummer' if key == 'line' else 'ein Datum oder Datum und Uhrzeit'} sein"
        if key in EVENT_TEXTS:
            return f"{key} muss Text in Anführungszeichen sein"
        if key == "line":
            if type(value) is not int or value < 0:
                return "line muss eine Zeilennummer sein"
        elif not isinstance(value, dt.date):
            return f"{key} muss ein Datum oder Datum und Uhrzeit sein"
        elif isinstance(value, dt.datetime) and value.tzinfo is None:
            raw[key] = value.replace(tzinfo=dt.UTC)
    return Event(**raw)


@dataclass(frozen=True)
class Stats:
    """Counts for `subscribers stats`."""

    total: int
    by_status: dict[str, int]
    signups_by_month: dict[str, int]  # "YYYY-MM" → people who signed up that month
    erased: int
    undated: int = 0                  # no sign-up time known (imported without one)
    without_proof: int = 0            # still on the list, but "kein DOI-Nachweis"


def subscriber_stats(people: SubscriberList) -> Stats:
    by_status = dict.fromkeys(STATUSES, 0)
    by_status.update(Counter(s.status for s in people))
    months = Counter(month_of(s.subscribed_at) for s in people if s.subscribed_at)
    return Stats(total=len(people), by_status=by_status,
                 signups_by_month=dict(sorted(months.items())), erased=len(people.suppressed),
                 undated=sum(1 for s in people if s.subscribed_at is None),
                 without_proof=sum(1 for s in people if needs_fresh_confirmation(s)))
