"""The subscriber file: people, their status and consent, written atomically under a lock.

subscribers/subscribers.toml stays readable and hand-editable. Every change goes through
`SubscriberStore.change()`: take the lock, read the current file, change it, write a temp
file, fsync, keep the old file as the one backup, rename, fsync the folder. A crash at any
point leaves the old or the new file, and concurrent writers never lose each other's changes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import tomli_w
from email_validator import EmailNotValidError, validate_email
from filelock import FileLock, Timeout

try:  # the compiled build of the same parser as the standard library's tomllib: ~3× faster
    import tomli as toml_reader
except ImportError:  # pragma: no cover
    import tomllib as toml_reader

from newsletter.config import toml_error_text
from newsletter.errors import SubscriberError

PENDING, ACTIVE, UNSUBSCRIBED, BOUNCED = "pending", "active", "unsubscribed", "bounced"
STATUSES = (PENDING, ACTIVE, UNSUBSCRIBED, BOUNCED)
LOCK_TIMEOUT = 60.0
PLAUSIBLE_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
HEADER = """\
# Abonnent:innen des Newsletters. Von Hand bearbeitbar; das Programm prüft die Datei
# beim Lesen und überschreibt nie eine Datei, die es nicht lesen konnte.
# status: pending (noch nicht bestätigt), active, unsubscribed, bounced.

"""


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass
class Subscriber:
    id: str
    email: str
    name: str = ""
    status: str = PENDING
    source: str = ""
    subscribed_at: dt.datetime | None = None
    confirmed_at: dt.datetime | None = None
    unsubscribed_at: dt.datetime | None = None
    bounced_at: dt.datetime | None = None
    consent_version: str = ""
    consent_text: str = ""
    signup_ip: str = ""
    signup_page: str = ""
    confirm_ip: str = ""
    note: str = ""

    @property
    def key(self) -> str:
        return email_key(self.email)

    @property
    def receives_mail(self) -> bool:
        """Active and confirmed: the only people an issue is sent to."""
        return self.status == ACTIVE

    def to_toml(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in ("", None)}


FIELD_NAMES = {f.name for f in fields(Subscriber)}
DATE_FIELDS = {"subscribed_at", "confirmed_at", "unsubscribed_at", "bounced_at"}


def new_id() -> str:
    """A random, URL-safe id that never changes; it is what unsubscribe links carry."""
    return secrets.token_urlsafe(12)


def normalize_email(text: str) -> str:
    """Validate an address (syntax only, works offline) and return its normalised form."""
    try:
        result = validate_email(text.strip(), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise SubscriberError(f"„{text.strip()}“ ist keine gültige E-Mail-Adresse: {exc}") from None
    return result.normalized


def email_key(email: str) -> str:
    """Addresses are stored as typed but compared without regard to case."""
    return email.strip().casefold()


@dataclass
class SubscriberList:
    """The whole file in memory: subscribers in file order plus the suppression list."""

    subscribers: list[Subscriber] = field(default_factory=list)
    salt: str = ""
    suppressed: set[str] = field(default_factory=set)
    changed: bool = False

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
        found = self.get(email)
        if found is None:
            raise SubscriberError(f"{email}: nicht in der Liste")
        return found

    def with_status(self, status: str | None) -> list[Subscriber]:
        return [s for s in self.subscribers if status is None or s.status == status]

    def suppression_hash(self, email: str) -> str:
        if not self.salt:
            self.salt = secrets.token_hex(16)
            self.changed = True
        return hashlib.sha256(f"{self.salt}:{email_key(email)}".encode()).hexdigest()

    def is_suppressed(self, email: str) -> bool:
        return bool(self.suppressed) and self.suppression_hash(email) in self.suppressed

    def add(self, email: str, name: str = "", status: str = PENDING, source: str = "",
            **details: Any) -> Subscriber:
        """Add a new person; the caller has checked that the address is free and not suppressed."""
        subscriber = Subscriber(id=new_id(), email=normalize_email(email), name=clean_name(name),
                                status=status, source=source, subscribed_at=now(), **details)
        if subscriber.key in self._by_key:
            raise SubscriberError(f"{email}: steht schon in der Liste")
        while subscriber.id in self._by_id:  # pragma: no cover - 96 random bits
            subscriber.id = new_id()
        if status == ACTIVE and subscriber.confirmed_at is None:
            subscriber.confirmed_at = subscriber.subscribed_at
        self.subscribers.append(subscriber)
        self._by_key[subscriber.key] = subscriber
        self._by_id[subscriber.id] = subscriber
        self.changed = True
        return subscriber

    def set_status(self, subscriber: Subscriber, status: str) -> bool:
        """Move someone to a new status with its timestamp; False if nothing changed."""
        if subscriber.status == status:
            return False
        subscriber.status = status
        stamp = now()
        if status == ACTIVE:
            subscriber.confirmed_at = subscriber.confirmed_at or stamp
        elif status == UNSUBSCRIBED:
            subscriber.unsubscribed_at = stamp
        elif status == BOUNCED:
            subscriber.bounced_at = stamp
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

    def to_toml(self) -> str:
        data: dict[str, Any] = {"subscriber": [s.to_toml() for s in self.subscribers]}
        if self.suppressed:
            data["suppression"] = {"salt": self.salt, "hashes": sorted(self.suppressed)}
        return HEADER + tomli_w.dumps(data)


def clean_name(name: str) -> str:
    """A name is data: line breaks and control characters are flattened to spaces."""
    return " ".join(re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", " ", name).split())[:200]


class SubscriberStore:
    """subscribers.toml on disk. Reads need no lock (renames are atomic); changes take it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT)

    def load(self) -> SubscriberList:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return SubscriberList()
        except OSError as exc:
            raise SubscriberError(f"{self.path}: kann nicht gelesen werden ({exc.strerror})") from None
        return parse_subscribers(self.path, raw)

    def active(self) -> Iterator[Subscriber]:
        """The people an issue goes to, in file order."""
        return (s for s in self.load() if s.receives_mail)

    @contextlib.contextmanager
    def change(self) -> Iterator[SubscriberList]:
        """Lock, read the current file, let the caller change it, write it back atomically."""
        try:
            self.lock.acquire()
        except Timeout:
            raise SubscriberError(f"{self.path}: gesperrt; läuft gerade ein anderer Vorgang?") from None
        try:
            current = self.load()
            yield current
            if current.changed:
                self._write(current.to_toml().encode())
        finally:
            self.lock.release()

    def _write(self, data: bytes) -> None:
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".subscribers.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if self.path.exists():  # keep the previous version as the one backup
                backup_tmp = f"{tmp}.bak"
                os.link(self.path, backup_tmp)
                os.replace(backup_tmp, self.path.with_suffix(".toml.bak"))
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


def parse_subscribers(path: Path, raw: bytes) -> SubscriberList:
    """Parse and validate the file; any problem names the line so a hand edit can be fixed."""
    try:
        text = raw.decode("utf-8")
        data = toml_reader.loads(text)
    except UnicodeDecodeError:
        raise SubscriberError(f"{path}: ist kein UTF-8-Text") from None
    except toml_reader.TOMLDecodeError as exc:
        raise SubscriberError(f"{path}: {toml_error_text(exc)}") from None
    starts = [text.count("\n", 0, m.start()) + 1
              for m in re.finditer(r"^[ \t]*\[\[[ \t]*subscriber[ \t]*\]\]", text, re.MULTILINE)]
    unknown = set(data) - {"subscriber", "suppression"}
    if unknown:
        raise SubscriberError(f"{path}: unbekannter Eintrag „{sorted(unknown)[0]}“ (erwartet [[subscriber]])")
    records = data.get("subscriber", [])
    if not isinstance(records, list):
        raise SubscriberError(f"{path}: „subscriber“ muss als [[subscriber]] geschrieben werden")
    people: list[Subscriber] = []
    seen: dict[str, int] = {}
    ids: set[str] = set()
    for index, record in enumerate(records):
        line = starts[index] if index < len(starts) else 0
        where = f"{path}:{line}"
        subscriber = _subscriber_from(where, record)
        if subscriber.key in seen:
            raise SubscriberError(f"{where}: {subscriber.email} steht doppelt (auch Zeile {seen[subscriber.key]})")
        if subscriber.id in ids:
            raise SubscriberError(f"{where}: id „{subscriber.id}“ kommt doppelt vor")
        seen[subscriber.key] = line
        ids.add(subscriber.id)
        people.append(subscriber)
    suppression = data.get("suppression", {})
    return SubscriberList(subscribers=people, salt=str(suppression.get("salt", "")),
                          suppressed=set(suppression.get("hashes", [])))


def _subscriber_from(where: str, record: dict[str, Any]) -> Subscriber:
    for key, value in record.items():
        if key not in FIELD_NAMES:
            raise SubscriberError(f"{where}: unbekannter Schlüssel „{key}“")
        if key in DATE_FIELDS:
            if not isinstance(value, dt.datetime):
                raise SubscriberError(f"{where}: {key} muss Datum und Uhrzeit sein, z. B. 2026-11-01T10:00:00Z")
            if value.tzinfo is None:
                record[key] = value.replace(tzinfo=dt.UTC)
        elif not isinstance(value, str):
            raise SubscriberError(f"{where}: {key} muss Text in Anführungszeichen sein")
    for key in ("id", "email"):
        if not record.get(key):
            raise SubscriberError(f"{where}: {key} fehlt")
    if record.get("status", PENDING) not in STATUSES:
        raise SubscriberError(f"{where}: status „{record['status']}“ ist unbekannt (erlaubt: {', '.join(STATUSES)})")
    # A light check: full validation happened when the address was added, and is too slow
    # to repeat for 100,000 people on every read.
    if not PLAUSIBLE_EMAIL.fullmatch(record["email"]):
        raise SubscriberError(f"{where}: „{record['email']}“ ist keine gültige E-Mail-Adresse")
    return Subscriber(**record)
