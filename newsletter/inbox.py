"""Reading her mailbox: what came back after a send is matched to the send and acted on.

`read_inbox` logs in to `[imap]`, looks at the mails it has not seen (by UID within the
folder's UIDVALIDITY, remembered in `state/inbox.sqlite`), sorts each with `returns.classify`,
acts, and moves what it acted on into subfolders. It never deletes or expunges anything;
replies and everything it does not recognise stay where they are.

Exactly once, whatever stops it: mails are handled in batches, and for each batch the changes
(journal rows, the subscriber file) are made first, then the mails are remembered as acted on
(by a hash of their bytes, synced to disk), then moved, then their UIDs remembered as done.
A rerun after a crash at any point repeats only steps that change nothing the second time:
every action is idempotent, and an acted-on mail is only moved, never acted on again.

Policy for a monthly list: a hard bounce (5.1.x: no such mailbox or domain) marks the address
`bounced` at once; a soft one (4.x.x, 5.2.2 mailbox full, a delay report, other 5.x.x) is noted
on that issue's journal row, and the address becomes `bounced` only when its last
`soft_bounce_limit` issues all bounced; 5.7.x (policy, spam, DMARC) marks nobody: it is a
problem with her sending, listed for her. Only bounces matched to a message we sent count: by
the envelope id the send asked for (DSN), by our Message-ID in the returned headers, or by the
recipient of a message sent in the last two weeks. A forged bounce changes nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
import sqlite3
import ssl
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from newsletter.errors import NewsletterError
from newsletter.headers import ascii_domain
from newsletter.journal import Row, SendJournal, journals
from newsletter.returns import Failure, Kind, Ours, Returned
from newsletter.sorting import Sorted, Sorter
from newsletter.subscribers import (
    ACTIVE,
    BOUNCE,
    BOUNCED,
    BOUNCED_EVENT,
    PENDING,
    UNSUBSCRIBED,
    UNSUBSCRIBED_EVENT,
    Event,
    SubscriberList,
    email_key,
    now,
)
from newsletter.tokens import verify_token
from newsletter.workspace import Workspace

PASSWORD_ENV = "NEWSLETTER_IMAP_PASSWORD"  # noqa: S105 - the variable's name, not a password
BATCH = 5000  # mails whose changes are applied together: one rewrite of the subscriber file per batch
FETCH = 50   # mails fetched per IMAP round trip; their bytes are dropped once they are read
LARGE = 2_000_000  # bytes; of a larger mail (a reply with photos) only this much is read and judged
RECENT = 14 * 86400  # a bounce matched only by its recipient counts for a message this recent
FLAG = "$NewsletterDone"  # marks a mail copied where the server cannot MOVE


class InboxError(NewsletterError):
    """The mailbox cannot be reached, logged in to, or read."""


class Outcome(StrEnum):
    """What happened to one mail (or would, in a dry run)."""

    BOUNCED = "bounced"                # a hard bounce: the address is marked bounced
    SOFT = "soft"                      # a soft bounce noted; the address is still active
    SOFT_LIMIT = "soft_limit"          # a soft bounce, and the last issues all bounced: now bounced
    POLICY = "policy"                  # a refusal about her sending (5.7.x): nobody marked
    COMPLAINT = "complaint"            # a spam complaint: unsubscribed
    UNSUBSCRIBED = "unsubscribed"      # an unsubscribe by mail: unsubscribed
    AUTO_REPLY = "auto_reply"          # moved, nothing else
    REPLY = "reply"                    # a reader wrote back: left in place
    UNMATCHED = "unmatched"            # a bounce or complaint about nothing we sent: left in place
    OTHER = "other"                    # not ours: left in place


OUTCOME_LABELS = {  # what `newsletter inbox` says about each, in German
    Outcome.BOUNCED: "unzustellbar (als unzustellbar markiert)",
    Outcome.SOFT_LIMIT: "vorübergehend unzustellbar, zum dritten Mal in Folge (markiert)",
    Outcome.SOFT: "vorübergehend unzustellbar (gezählt)",
    Outcome.POLICY: "Ablehnung deines Versands (niemand markiert)",
    Outcome.COMPLAINT: "Beschwerde (abgemeldet)",
    Outcome.UNSUBSCRIBED: "Abmeldung per Mail (abgemeldet)",
    Outcome.AUTO_REPLY: "Abwesenheitsnotiz (verschoben)",
    Outcome.REPLY: "Antwort auf eine Ausgabe (liegt im Posteingang)",
    Outcome.UNMATCHED: "Bounce ohne Bezug zu einem Versand (liegt im Posteingang)",
    Outcome.OTHER: "nicht vom Newsletter (liegt im Posteingang)",
}


MOVED = {Outcome.BOUNCED: "bounce_folder", Outcome.SOFT: "bounce_folder", Outcome.SOFT_LIMIT: "bounce_folder",
         Outcome.POLICY: "bounce_folder", Outcome.COMPLAINT: "complaint_folder",
         Outcome.UNSUBSCRIBED: "unsubscribe_folder", Outcome.AUTO_REPLY: "autoreply_folder"}


@dataclass(frozen=True)
class Handled:
    """One mail and what became of it. `detail` never holds a reply's text."""

    uid: int
    outcome: Outcome
    address: str = ""       # whom it concerned
    issue: str = ""         # which issue's send, for bounces
    status: str = ""        # a bounce's status code
    detail: str = ""        # a bounce's diagnostic; for a reply, its sender, subject and date
    note: str = ""


@dataclass
class InboxReport:
    folder: str
    dry_run: bool
    handled: list[Handled] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    moved: int = 0

    def count(self, *outcomes: Outcome) -> int:
        return sum(1 for h in self.handled if h.outcome in outcomes)

    def summary_line(self) -> str:
        """One line for the send plan: "3 unzustellbar, 1 Abmeldung"."""
        parts = [(self.count(Outcome.BOUNCED, Outcome.SOFT_LIMIT), "unzustellbar"),
                 (self.count(Outcome.UNSUBSCRIBED), "Abmeldung(en)"),
                 (self.count(Outcome.COMPLAINT), "Beschwerde(n)"),
                 (self.count(Outcome.SOFT), "vorübergehend unzustellbar"),
                 (self.count(Outcome.POLICY), "Ablehnung(en) deines Versands"),
                 (self.count(Outcome.REPLY), "Antwort(en)")]
        text = ", ".join(f"{n} {label}" for n, label in parts if n)
        return text or "nichts Neues"

    def to_json(self) -> dict[str, Any]:
        return {"folder": self.folder, "dry_run": self.dry_run, "moved": self.moved, "notes": self.notes,
                "counts": {o.value: self.count(o) for o in Outcome},
                "mails": [{"uid": h.uid, "outcome": h.outcome.value, "address": h.address or None,
                           "issue": h.issue or None, "status": h.status or None, "detail": h.detail or None,
                           "note": h.note or None} for h in self.handled]}


# -- what we sent: the journals, read once per run --------------------------------------------


@dataclass(frozen=True)
class Sent:
    journal: Path
    issue: str
    started: str
    row: Row


class SentMail:
    """Every message our sends put out, by Message-ID and by address, from the journals."""

    def __init__(self, workspace: Workspace) -> None:
        self.by_id: dict[str, Sent] = {}
        self.by_address: dict[str, list[Sent]] = {}
        self.issues: list[tuple[str, Path]] = []  # (started, journal), oldest first
        subjects = []
        for path in journals(workspace.journal_dir):
            with SendJournal(path) as journal:
                started = journal.meta("started") or ""
                subjects.append(journal.meta("subject") or "")
                self.issues.append((started, path))
                for row in journal.sent_rows():
                    sent = Sent(path, path.stem, started, row)
                    self.by_id[row.message_id or ""] = sent
                    self.by_address.setdefault(email_key(row.email), []).append(sent)
        self.issues.sort()
        domain = ascii_domain(workspace.config.newsletter.from_email.rpartition("@")[2])
        self.domain = domain
        self.ours = Ours(re.compile(r"<[A-Za-z0-9.-]+\.[0-9a-f]{20}@" + re.escape(domain) + ">", re.I),
                         tuple(s for s in subjects if s))

    @property
    def since(self) -> dt.date | None:
        """The day of the first send: nothing older can be about it."""
        first = next((started for started, _ in self.issues if started), "")
        return dt.datetime.fromisoformat(first).date() - dt.timedelta(days=1) if first else None

    def match(self, found: Returned, failure: Failure | None) -> Sent | None:
        """The exact message a report is about: by envelope id, by Message-ID, else by recipient."""
        if found.envid and (sent := self.by_id.get(f"<{found.envid}@{self.domain}>")):
            return sent
        for message_id in found.referenced:
            if sent := self.by_id.get(message_id):
                return sent
        if found.envid or found.referenced:
            return None  # it names a message, and not one we sent: forged, or about another mail
        addresses = [failure.original, failure.recipient] if failure else found.recipients
        now = dt.datetime.now(dt.UTC)
        for address in filter(None, addresses):
            candidates = [s for s in self.by_address.get(email_key(address), []) if s.row.sent_at]
            recent = [s for s in candidates
                      if (now - dt.datetime.fromisoformat(s.row.sent_at or "")).total_seconds() < RECENT]
            if recent:
                return max(recent, key=lambda s: s.row.sent_at or "")
        return None


def bounce_severity(status: str, action: str) -> str:
    """hard, soft or policy, for a monthly list (see the module docstring)."""
    if action == "delayed" or status.startswith("4.") or status == "5.2.2":
        return "soft"
    if status.startswith("5.7."):
        return "policy"
    if status.startswith("5.1.") and status not in ("5.1.7", "5.1.8"):
        return "hard"
    return "soft"


# -- the state folder: which mails were handled -------------------------------------------------


class InboxState:
    """`state/inbox.sqlite`: UIDs done per folder and UIDVALIDITY, and mails acted on (by hash)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            self.db = sqlite3.connect(path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript("""
                CREATE TABLE IF NOT EXISTS done (folder TEXT, uidvalidity INTEGER, uid INTEGER, outcome TEXT,
                                                 PRIMARY KEY (folder, uidvalidity, uid));
                CREATE TABLE IF NOT EXISTS acted (key TEXT PRIMARY KEY, outcome TEXT NOT NULL, at TEXT NOT NULL);
            """)
        except sqlite3.Error as exc:
            raise InboxError(f"{path}: nicht lesbar ({exc})") from None

    def close(self) -> None:
        self.db.close()

    def last_uid(self, folder: str, uidvalidity: int) -> int:
        row = self.db.execute("SELECT MAX(uid) FROM done WHERE folder = ? AND uidvalidity = ?",
                              (folder, uidvalidity)).fetchone()
        return row[0] or 0

    def acted(self, keys: list[str]) -> dict[str, Outcome]:
        found: dict[str, Outcome] = {}
        for key in keys:
            row = self.db.execute("SELECT outcome FROM acted WHERE key = ?", (key,)).fetchone()
            if row:
                found[key] = Outcome(row[0])
        return found

    def remember_acted(self, outcomes: dict[str, Outcome]) -> None:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        with self._transaction():
            self.db.executemany("INSERT OR IGNORE INTO acted VALUES (?, ?, ?)",
                                [(key, outcome.value, now) for key, outcome in outcomes.items()])

    def remember_done(self, folder: str, uidvalidity: int, outcomes: dict[int, Outcome]) -> None:
        with self._transaction():
            self.db.executemany("INSERT OR REPLACE INTO done VALUES (?, ?, ?, ?)",
                                [(folder, uidvalidity, uid, o.value) for uid, o in outcomes.items()])

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One commit (one fsync) for a whole batch; the connection is in autocommit mode otherwise."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")


# -- the mailbox ------------------------------------------------------------------------------


@contextlib.contextmanager
def mailbox(workspace: Workspace) -> Iterator[Any]:
    """A logged-in IMAPClient for `[imap]`, certificates always verified; InboxError naming host:port."""
    from imapclient import IMAPClient
    from imapclient.exceptions import IMAPClientError, LoginError

    from newsletter.transport import ask_password, tls_context  # smtplib and all: not before it is needed

    settings = workspace.config.imap
    if not settings.host:
        raise InboxError("kein Postfach eingerichtet: [imap] host in newsletter.toml fehlt")
    where = f"{settings.host}:{settings.effective_port}"
    password = ask_password(PASSWORD_ENV, settings.password_command, "imap")
    context = tls_context(settings, workspace.config.path.parent)
    try:
        client = IMAPClient(settings.host, settings.effective_port, ssl=settings.security == "ssl",
                            ssl_context=context, timeout=settings.timeout)
    except ssl.SSLCertVerificationError as exc:
        raise InboxError(f"{where}: TLS-Zertifikat nicht vertrauenswürdig ({exc.verify_message}); für eine eigene "
                         "CA [imap] tls_ca_file setzen") from None
    except ssl.SSLError as exc:
        raise InboxError(f"{where}: TLS-Fehler ({exc.reason or exc}); stimmt security (ssl oder starttls)?") from None
    except (OSError, IMAPClientError) as exc:
        raise InboxError(f"{where}: keine Verbindung ({getattr(exc, 'strerror', None) or exc}). "
                         "Stimmen host und port?") from None
    try:
        try:
            if settings.security == "starttls":
                if not client.has_capability("STARTTLS"):
                    raise InboxError(f"{where}: der Server bietet kein STARTTLS an; ohne Verschlüsselung melde "
                                     "ich mich nicht an")
                client.starttls(context)
            client.login(settings.username, password)
        except LoginError:
            raise InboxError(f"{where}: Anmeldung am Postfach abgelehnt; Benutzername und Passwort prüfen "
                             f"({PASSWORD_ENV})") from None
        except ssl.SSLCertVerificationError as exc:
            raise InboxError(f"{where}: TLS-Zertifikat nicht vertrauenswürdig ({exc.verify_message}); für eine "
                             "eigene CA [imap] tls_ca_file setzen") from None
        except (ssl.SSLError, OSError, IMAPClientError) as exc:
            raise InboxError(f"{where}: Fehler beim Anmelden ({exc})") from None
        yield client
    finally:
        with contextlib.suppress(Exception):  # the connection may be gone already; nothing to lose
            client.logout()


class Folders:
    """Her folder names as the server spells them (its namespace prefix and hierarchy separator)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        try:
            personal = client.namespace().personal or [("", "/")]
            self.prefix, self.separator = personal[0][0] or "", personal[0][1] or "/"
        except Exception:  # noqa: BLE001 - a server without NAMESPACE: plain names
            self.prefix, self.separator = "", "/"
        self.ready: set[str] = set()

    def name(self, configured: str) -> str:
        name = configured.replace("/", self.separator)
        return name if not self.prefix or name.startswith(self.prefix) else self.prefix + name

    def ensure(self, configured: str) -> str:
        name = self.name(configured)
        if name not in self.ready:
            if not self.client.folder_exists(name):
                parts = name.split(self.separator)
                for depth in range(1, len(parts) + 1):
                    partial = self.separator.join(parts[:depth])
                    if partial and not self.client.folder_exists(partial):
                        self.client.create_folder(partial)
                        with contextlib.suppress(Exception):  # subscribing is a courtesy for her mail program
                            self.client.subscribe_folder(partial)
            self.ready.add(name)
        return name


# -- reading ----------------------------------------------------------------------------------


def read_inbox(workspace: Workspace, dry_run: bool = False,
               progress: Callable[[int, int], None] = lambda done, total: None,
               stop: Callable[[], bool] = lambda: False) -> InboxReport:
    """Handle every mail in `[imap] folder` not handled before; with dry_run, change nothing anywhere."""
    from imapclient.exceptions import IMAPClientError

    settings = workspace.config.imap
    report = InboxReport(settings.folder, dry_run)
    sent = SentMail(workspace)
    state = InboxState(workspace.state_dir / "inbox.sqlite")
    meanwhile = ThreadPoolExecutor(1, thread_name_prefix="newsletter-inbox")  # while the server answers
    preparing = meanwhile.submit(lambda: Actor(workspace, sent, dry_run).ready())
    try:
        with mailbox(workspace) as client:
            try:
                selected = client.select_folder(settings.folder, readonly=dry_run)
            except IMAPClientError as exc:
                raise InboxError(f"[imap] folder: „{settings.folder}“ nicht gefunden ({exc})") from None
            uidvalidity = int(selected.get(b"UIDVALIDITY", 0))
            last = state.last_uid(settings.folder, uidvalidity)
            criteria: list[Any] = ["UID", f"{last + 1}:*"]
            if sent.since is not None and last == 0:
                criteria += ["SINCE", sent.since]
            try:
                uids = sorted(uid for uid in client.search(criteria) if uid > last)
            except (IMAPClientError, OSError) as exc:
                raise InboxError(f"{settings.host}: Suche im Postfach fehlgeschlagen ({exc})") from None
            if sent.since is None:
                report.notes.append("Noch kein Versand: im Postfach gibt es nichts zuzuordnen.")
                uids = []
            folders = Folders(client)
            actor = preparing.result()
            meanwhile.shutdown()  # its thread joined: the sorter forks only when there is no other
            with Sorter(sent.ours, len(uids)) as sorter:
                for start in range(0, len(uids), BATCH):
                    if stop():
                        break
                    batch = uids[start:start + BATCH]
                    _handle_batch(client, folders, state, actor, report, uidvalidity, batch, sorter)
                    progress(min(start + BATCH, len(uids)), len(uids))
    except OSError as exc:
        raise InboxError(f"{settings.host}: Verbindung zum Postfach abgebrochen ({exc})") from None
    finally:
        meanwhile.shutdown()
        state.close()
    return report


def _handle_batch(client: Any, folders: Folders, state: InboxState, actor: Actor, report: InboxReport,
                  uidvalidity: int, batch: list[int], sorter: Sorter) -> None:
    """One batch, in the order that makes a crash anywhere harmless (module docstring).

    Mails are fetched FETCH at a time; while the sorter sorts one chunk the next is fetched.
    """
    settings = actor.workspace.config.imap
    keys: dict[int, str] = {}
    known: dict[str, Outcome] = {}
    results: dict[int, Handled] = {}

    def fetched(chunk: list[int]) -> dict[int, bytes]:
        """The chunk's mails not acted on before (those get their old outcome right away)."""
        raw: dict[int, bytes] = {}
        for uid, data in client.fetch(chunk, ["RFC822.SIZE", f"BODY.PEEK[]<0.{LARGE}>"]).items():
            raw[uid] = data.get(b"BODY[]<0>") or b""
            if (size := data.get(b"RFC822.SIZE", 0)) > LARGE:
                report.notes.append(f"Mail {uid} ist {size / 1_000_000:.0f} MB groß: nur nach ihren ersten "
                                    f"{LARGE // 1_000_000} MB beurteilt")
        here = {uid: hashlib.sha256(raw[uid]).hexdigest() for uid in raw}
        keys.update(here)
        known.update(state.acted(list(here.values())))
        for uid in [uid for uid in raw if here[uid] in known]:
            results[uid] = Handled(uid, known[here[uid]], note="schon früher bearbeitet")
            del raw[uid]
        return raw

    def decide(sorted_mails: Sorted) -> None:
        for uid in sorted(sorted_mails):
            found = sorted_mails[uid]
            if found is None:
                report.notes.append(f"Mail {uid} ist nicht lesbar (kaputtes MIME): liegen gelassen")
                results[uid] = Handled(uid, Outcome.OTHER, note="nicht lesbar")
            else:
                results[uid] = actor.decide(uid, found)

    for start in range(0, len(batch), FETCH):
        mails = fetched(batch[start:start + FETCH])  # while the helpers sort the chunks before
        ready = sorter.take() if sorter.full else None
        sorter.submit(mails)
        if ready is not None:
            decide(ready)
    while sorter.busy:
        decide(sorter.take())
    if actor.dry_run:
        report.handled.extend(results[uid] for uid in sorted(results))
        return
    actor.apply()
    state.remember_acted({keys[uid]: h.outcome for uid, h in results.items()
                          if h.outcome in MOVED and keys[uid] not in known})
    by_folder: dict[str, list[int]] = {}
    for uid, handled in results.items():
        if handled.outcome in MOVED:
            by_folder.setdefault(getattr(settings, MOVED[handled.outcome]), []).append(uid)
    for configured, uids in by_folder.items():
        target = folders.ensure(configured)
        if client.has_capability("MOVE"):
            client.move(uids, target)
        else:  # copied and marked, never deleted: her mail program shows both until she tidies up
            client.copy(uids, target)
            client.add_flags(uids, [FLAG])
        report.moved += len(uids)
    state.remember_done(settings.folder, uidvalidity, {uid: h.outcome for uid, h in results.items()})
    report.handled.extend(results[uid] for uid in sorted(results))


# -- acting -----------------------------------------------------------------------------------


class Actor:
    """Decides what each mail means for the list, then applies a batch's changes in one go:
    bounces onto their journal rows, status changes in one rewrite of the subscriber file."""

    def __init__(self, workspace: Workspace, sent: SentMail, dry_run: bool) -> None:
        self.workspace = workspace
        self.sent = sent
        self.dry_run = dry_run
        self.secret = workspace.secret()
        self.store = workspace.store()
        self.limit = workspace.config.imap.soft_bounce_limit
        self.bounces: list[tuple[Sent, str, str, str]] = []     # (row, severity, status, diagnostic)
        self.statuses: list[tuple[str, str, Event]] = []        # (subscriber id, address, what happened)
        self.soft: dict[str, set[Path]] = {}                     # subscriber id -> journals with a soft bounce
        self._people: SubscriberList | None = None

    def ready(self) -> Actor:
        """Read what deciding needs before the first mail arrives: the list (for tokens) and
        flufl.bounce (the sorting helpers are forked afterwards and inherit it)."""
        import flufl.bounce  # noqa: F401 - loaded once here rather than in every helper

        self._listed()
        return self

    def _listed(self) -> SubscriberList:
        if self._people is None:
            self._people = self.store.load()
        return self._people

    def decide(self, uid: int, found: Returned) -> Handled:
        if found.kind is Kind.BOUNCE:
            return self._bounce(uid, found)
        if found.kind is Kind.COMPLAINT:
            person = self._complainant(found)
            if person is None:
                return Handled(uid, Outcome.UNMATCHED, note="Beschwerde ohne Bezug zu einem Versand")
            self.statuses.append((person[0], person[1], Event(UNSUBSCRIBED_EVENT, now(),
                                                               source="Beschwerde über Spam (Postfach)")))
            return Handled(uid, Outcome.COMPLAINT, address=person[1])
        if found.kind is Kind.UNSUBSCRIBE:
            return self._unsubscribe(uid, found)
        if found.kind is Kind.AUTO_REPLY:
            return Handled(uid, Outcome.AUTO_REPLY, address=found.sender)
        if found.kind is Kind.REPLY:
            return Handled(uid, Outcome.REPLY, address=found.sender,
                           detail=f"{found.sender} · {found.subject} · {found.date}")
        return Handled(uid, Outcome.OTHER)

    def _bounce(self, uid: int, found: Returned) -> Handled:
        outcome, first = Outcome.UNMATCHED, Handled(uid, Outcome.UNMATCHED, note="Bounce ohne Bezug zu einem Versand")
        for failure in found.failures or [Failure("")]:
            sent = self.sent.match(found, failure if failure.recipient else None)
            if sent is None:
                continue
            severity = bounce_severity(failure.status, failure.action)
            self.bounces.append((sent, severity, failure.status, failure.diagnostic))
            row = sent.row
            if severity == "hard":
                result = Outcome.BOUNCED
            elif severity == "policy":
                result = Outcome.POLICY
            else:
                self.soft.setdefault(row.subscriber_id, set()).add(sent.journal)
                result = Outcome.SOFT_LIMIT if self._soft_limit_reached(row) else Outcome.SOFT
            kind = BOUNCED_EVENT if result in (Outcome.BOUNCED, Outcome.SOFT_LIMIT) else BOUNCE
            note = {Outcome.SOFT_LIMIT: f"vorübergehend, {self.limit} Ausgaben in Folge", Outcome.SOFT: "vorübergehend",
                    Outcome.POLICY: "Ablehnung des Versands, nicht der Person"}.get(result, "")
            self.statuses.append((row.subscriber_id, row.email, Event(
                kind, now(), source="Postfach", issue=sent.issue, code=failure.status,
                diagnostic=failure.diagnostic, note=note)))
            if outcome is Outcome.UNMATCHED or result in (Outcome.BOUNCED, Outcome.SOFT_LIMIT):
                outcome = result
                first = Handled(uid, result, address=row.email, issue=sent.issue, status=failure.status,
                                detail=failure.diagnostic)
        return first

    def _soft_limit_reached(self, row: Row) -> bool:
        """Did the last `limit` issues this person was sent all bounce (this run's bounces included)?"""
        theirs = {s.journal: s.row for s in self.sent.by_address.get(email_key(row.email), [])
                  if s.row.subscriber_id == row.subscriber_id}
        mailed = [path for _, path in self.sent.issues if path in theirs][-self.limit:]
        soft_now = self.soft.get(row.subscriber_id, set())
        return len(mailed) == self.limit and all(
            path in soft_now or theirs[path].bounce_kind in ("soft", "hard") for path in mailed)

    def _complainant(self, found: Returned) -> tuple[str, str] | None:
        sent = self.sent.match(found, None)
        if sent is not None:
            return sent.row.subscriber_id, sent.row.email
        subscriber_id = verify_token(self.secret, found.token) if found.token else None
        person = self._listed().by_id(subscriber_id) if subscriber_id else None
        return (person.id, person.email) if person is not None else None

    def _unsubscribe(self, uid: int, found: Returned) -> Handled:
        subscriber_id = verify_token(self.secret, found.token) if found.token else None
        people = self._listed()
        person = people.by_id(subscriber_id) if subscriber_id else None
        if person is not None:
            self.statuses.append((person.id, person.email, Event(UNSUBSCRIBED_EVENT, now(),
                                                                 source="Abmeldung per Mail, mit Token")))
            return Handled(uid, Outcome.UNSUBSCRIBED, address=person.email, note="mit Abmelde-Token")
        listed = people.get(found.sender) if found.sender else None
        if listed is not None and listed.status in (ACTIVE, PENDING):
            self.statuses.append((listed.id, listed.email, Event(UNSUBSCRIBED_EVENT, now(),
                                                                 source="Abmeldung per Mail, nach Absender")))
            return Handled(uid, Outcome.UNSUBSCRIBED, address=listed.email, note="ohne Token, nach Absender")
        return Handled(uid, Outcome.OTHER, note="Abmeldewunsch von einer Adresse, die nicht auf der Liste steht")

    def apply(self) -> None:
        """Make this batch's changes durable; each is idempotent, so a rerun after a crash is harmless."""
        when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        by_journal: dict[Path, list[tuple[Sent, str, str, str]]] = {}
        for bounce in self.bounces:
            by_journal.setdefault(bounce[0].journal, []).append(bounce)
        for path, bounces in by_journal.items():
            with SendJournal(path) as journal:
                journal.record_bounces(((sent.row.seq, severity, status, diagnostic)
                                        for sent, severity, status, diagnostic in bounces), when)
        if self.statuses:
            with self.store.change() as people:
                for subscriber_id, _, event in self.statuses:
                    person = people.by_id(subscriber_id)
                    if person is None or _already(person.events, event):
                        continue  # erased meanwhile, or this mail was acted on before a crash
                    if event.kind == UNSUBSCRIBED_EVENT and person.status in (ACTIVE, PENDING, BOUNCED):
                        people.set_status(person, UNSUBSCRIBED, event)
                    elif event.kind == BOUNCED_EVENT and person.status == ACTIVE:
                        people.set_status(person, BOUNCED, event)
                    elif event.kind in (BOUNCED_EVENT, BOUNCE):  # someone who left keeps their status
                        people.record(person, Event(BOUNCE, event.at, source=event.source, issue=event.issue,
                                                    code=event.code, diagnostic=event.diagnostic, note=event.note))
        self.bounces, self.statuses, self._people = [], [], None
        self.sent = _refreshed(self.sent, by_journal)


def _already(events: list[Event], event: Event) -> bool:
    """A bounce of the same issue with the same code is recorded once, however often it is read."""
    return event.kind != UNSUBSCRIBED_EVENT and any(
        e.kind in (BOUNCE, BOUNCED_EVENT) and e.issue == event.issue and e.code == event.code and e.issue
        for e in events)


def _refreshed(sent: SentMail, changed: dict[Path, Any]) -> SentMail:
    """After recording bounces the rows changed: read those journals' rows again for the next batch."""
    if not changed:
        return sent
    for path in changed:
        with SendJournal(path) as journal:
            for row in journal.sent_rows():
                old = sent.by_id.get(row.message_id or "")
                if old is not None:
                    new = Sent(old.journal, old.issue, old.started, row)
                    sent.by_id[row.message_id or ""] = new
                    listed = sent.by_address.get(email_key(row.email), [])
                    sent.by_address[email_key(row.email)] = [new if s.row.seq == row.seq and s.journal == path
                                                             else s for s in listed]
    return sent
