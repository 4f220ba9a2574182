"""The send journal: one SQLite row per recipient of an issue, so a send resumes exactly.

A row goes `pending` → `reserved` → `sending` → `sent` (or `deferred`, `failed`, `unknown`,
`skipped`). `sending` is committed before MAIL FROM, `sent` only after the server's 250 to
DATA. Rows found in `sending` when a run starts belong to a run that died mid-message; they
become `unknown` and are resent only when the author asks, so nobody gets a copy twice.

Durable without waiting for the disk: commits survive a killed process (synchronous=NORMAL);
the commits that reserve rows for the workers also wait for the disk (an fsync), a batch of
rows at a time, made while a worker waits for the server anyway. Each reservation notes which
boot of the machine made it (Linux's boot id, macOS's boot session). So after

- kill -9 or a crash of the tool: every commit is there. `sending` becomes `unknown`;
  `reserved` goes back to `pending` (its MAIL FROM never went out: `sending` is committed
  before it).
- a power cut or a crash of the system (the boot differs): the commits since the last fsync
  may be gone, so a `reserved` row may be one whose `sending` was lost after its message
  went out. `reserved` and `sending` both become `unknown`: at most one batch (32) and one
  row per connection to ask about, nobody mailed twice. (A disk that loses power on its own,
  a USB disk pulled out mid-send, is not a new boot: keep the workspace on the machine's disk.)

Where no boot can be told apart (other systems), one row is reserved at a time, always
before the final "." of the message before it: that fsync makes the message's `sending`
durable before the server can accept it, so after a power cut `reserved` → `pending` is right.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import sqlite3
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from filelock import FileLock, Timeout

from newsletter.errors import NewsletterError


class RowState(StrEnum):
    """Where one recipient's message stands; the values are what the journal file holds."""

    PENDING = "pending"
    RESERVED = "reserved"  # held by one worker for its next message; no MAIL FROM yet
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    UNKNOWN = "unknown"
    SKIPPED = "skipped"


PENDING, RESERVED, SENDING, SENT = RowState.PENDING, RowState.RESERVED, RowState.SENDING, RowState.SENT
DEFERRED, FAILED, UNKNOWN, SKIPPED = RowState.DEFERRED, RowState.FAILED, RowState.UNKNOWN, RowState.SKIPPED
STATES = (PENDING, SENDING, SENT, DEFERRED, FAILED, UNKNOWN, SKIPPED)  # `reserved` counts as pending
ERASED = "(gelöscht)"  # the address of a row `subscribers forget` scrubbed

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS recipients (
    seq INTEGER PRIMARY KEY,
    subscriber_id TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_code INTEGER,
    last_reply TEXT,
    message_id TEXT,
    next_attempt_at REAL,
    updated_at TEXT,
    sent_at TEXT,
    deferred_since REAL,
    bounce_kind TEXT,
    bounce_status TEXT,
    bounce_diagnostic TEXT,
    bounced_at TEXT
);
-- No index on every row's state: a change of state then writes the row's page alone, and
-- fewer pages make a faster fsync. Pending rows are found by walking seq (see _next_due).
DROP INDEX IF EXISTS recipients_state;
CREATE INDEX IF NOT EXISTS recipients_deferred ON recipients (seq) WHERE state = 'deferred';
"""
READ_AHEAD = 64  # pending rows fetched at once
RESERVE_BATCH = 32  # rows reserved by one fsync where the boot is known: after a power cut, the most to ask about
ROW_SELECT = ("SELECT seq, subscriber_id, email, name, state, attempts, last_code, last_reply,"
              " message_id, next_attempt_at, sent_at, deferred_since,"
              " bounce_kind, bounce_status, bounce_diagnostic, bounced_at FROM recipients")
# Columns later versions added; a journal from before gets them when it is opened.
ADDED_COLUMNS = {"deferred_since": "REAL", "bounce_kind": "TEXT", "bounce_status": "TEXT",
                 "bounce_diagnostic": "TEXT", "bounced_at": "TEXT"}
BOUNCE_KINDS = ("hard", "soft", "policy")  # as `newsletter inbox` read a bounce that came back later


@dataclass(frozen=True)
class Row:
    seq: int
    subscriber_id: str
    email: str
    name: str
    state: str
    attempts: int
    last_code: int | None
    last_reply: str | None
    message_id: str | None
    next_attempt_at: float | None
    sent_at: str | None
    deferred_since: float | None  # when its first temporary failure came: the retry window starts
    bounce_kind: str | None = None     # a bounce that came back later: hard, soft or policy
    bounce_status: str | None = None   # its enhanced status code, e.g. "5.1.1"
    bounce_diagnostic: str | None = None
    bounced_at: str | None = None


class JournalError(NewsletterError):
    """A send journal cannot be read or written (a damaged file, a full disk)."""


_stamp_cache = (-1, "")


def _stamp() -> str:
    """Now in UTC to the second; formatted once per second, it is written twice per message."""
    global _stamp_cache
    second = int(time.time())
    if second != _stamp_cache[0]:
        _stamp_cache = (second, dt.datetime.fromtimestamp(second, dt.UTC).isoformat(timespec="seconds"))
    return _stamp_cache[1]


@functools.cache
def boot_id() -> str:
    """Which boot of the machine this is, or "" where it cannot be told. Only a power cut or a
    crash of the system loses a commit that did not wait for the disk, and both mean a new boot."""
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    if sys.platform == "darwin":
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(["/usr/sbin/sysctl", "-n", "kern.bootsessionuuid"], capture_output=True, text=True,
                                  timeout=5, check=True).stdout.strip()
    return ""


class SendJournal:
    """One issue's journal file, and the only door to it: `with SendJournal(path) as journal:`.

    Only one `send` may hold it at a time (a file lock says so). A damaged file or a full disk
    raises JournalError naming the file, never a bare sqlite3 error.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._walked = 0  # no pending row below this seq that this journal has not handed out
        self._ahead: list[tuple] = []  # pending rows read ahead, the next one last
        self._held: deque[Row] = deque()  # reserved by one fsync, not yet handed to a worker
        self._boot_noted = False
        with self._sqlite_errors():
            path.parent.mkdir(parents=True, exist_ok=True)
            # timeout: wait for `subscribers forget` scrubbing this journal from another process
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            # Small pages for a new file: a commit writes the changed row's page to the log, and the
            # fsync of a reservation waits for every page logged since the last one.
            self.db.execute("PRAGMA page_size=1024")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # durable writes ask for FULL (module docstring)
            self.db.executescript(SCHEMA)
            columns = {row[1] for row in self.db.execute("PRAGMA table_info(recipients)")}
            for name, kind in ADDED_COLUMNS.items():
                if name not in columns:
                    self.db.execute(f"ALTER TABLE recipients ADD COLUMN {name} {kind}")
            # Only this journal's own `finish` makes rows deferred; until then no need to look for them.
            self._deferred = self.db.execute(
                "SELECT EXISTS (SELECT 1 FROM recipients WHERE state = ?)", (DEFERRED,)).fetchone()[0] == 1
        self.run_lock = FileLock(str(path) + ".lock")

    @classmethod
    def existing(cls, path: Path) -> SendJournal | None:
        return cls(path) if path.exists() else None

    def __enter__(self) -> SendJournal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _sqlite_errors(self) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise self._error(exc) from None

    def _error(self, exc: sqlite3.Error | OSError) -> JournalError:
        if isinstance(exc, OSError):
            return JournalError(f"{self.path}: {exc.strerror or exc}")
        return JournalError(f"{self.path}: Versandprotokoll nicht les- oder schreibbar ({exc}); "
                            "ist die Festplatte voll?")

    def close(self) -> None:
        with self._sqlite_errors():
            self.flush()
            self.db.close()

    def commit(self) -> None:
        """Commit what `finish` left open, without waiting for the disk: before a pause, so the
        write lock is not held while a send waits (`subscribers forget` must get in)."""
        with self._lock, self._sqlite_errors():
            if self.db.in_transaction:
                self.db.execute("COMMIT")

    def flush(self) -> None:
        """Make durable an outcome that `finish` left for a `start` that never came."""
        if self.db.in_transaction:
            with self._write():
                pass

    @contextlib.contextmanager
    def _synced(self) -> Iterator[None]:
        """Under the lock, every commit waits for the disk (FULL) until the block ends. An outcome
        `finish` left open is committed first: the setting cannot change inside a transaction."""
        with self._lock, self._sqlite_errors():
            if self.db.in_transaction:
                self.db.execute("COMMIT")
            self.db.execute("PRAGMA synchronous=FULL")
            try:
                yield
            finally:
                self.db.execute("PRAGMA synchronous=NORMAL")

    def _owe_fsync(self) -> None:
        """SQLite syncs only a commit that wrote something: note when the journal was last synced."""
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('synced_at', ?)", (_stamp(),))

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One change in its own transaction, committed with an fsync that makes every earlier
        commit durable too."""
        with self._synced():
            self.db.execute("BEGIN IMMEDIATE")
            changes = self.db.total_changes
            try:
                yield
            finally:
                if self.db.total_changes == changes:
                    self._owe_fsync()
                self.db.execute("COMMIT")

    def _unsynced(self, sql: str, parameters: tuple, commit: bool = True) -> int:
        """One change that need only survive a killed process: it joins the transaction `finish`
        left open (one commit for the outcome and the next `start`) and commits without waiting
        for the disk, or, with commit=False, leaves it open for the next write. Twice per
        message, so plain code rather than context managers. Returns the rows changed."""
        with self._lock:
            try:
                if not self.db.in_transaction:
                    self.db.execute("BEGIN IMMEDIATE")
                try:
                    return self.db.execute(sql, parameters).rowcount
                finally:
                    if commit:
                        self.db.execute("COMMIT")
            except (sqlite3.Error, OSError) as exc:
                raise self._error(exc) from None

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Hold the run lock: a second `send` of the same issue is refused, not interleaved."""
        try:
            self.run_lock.acquire(timeout=0)
        except Timeout:
            raise NewsletterError(f"{self.path.stem}: für diese Ausgabe läuft gerade schon ein Versand "
                                  "(in einem anderen Fenster?)") from None
        try:
            yield
        finally:
            self.run_lock.release()

    def is_running(self) -> bool:
        """Whether a `send` holds this journal right now (then `sending` rows are in flight)."""
        try:
            self.run_lock.acquire(timeout=0)
        except Timeout:
            return True
        self.run_lock.release()
        return False

    # -- metadata -------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        with self._sqlite_errors():
            row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, values: dict[str, str]) -> None:
        """Remember facts about the run (how the last one ended, and the reply that ended it)."""
        with self._write():
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", values.items())

    @property
    def frozen(self) -> bool:
        return self.meta("frozen_at") is not None

    def freeze(self, recipients: Iterable[tuple[str, str, str]], meta: dict[str, str]) -> int:
        """Fix the recipient list (id, email, name) once, in one transaction, synced to disk."""
        with self._synced():
            if self.meta("frozen_at") is not None:
                raise NewsletterError(f"{self.path}: die Empfängerliste steht schon fest")
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany(
                    "INSERT OR IGNORE INTO recipients (subscriber_id, email, name, updated_at)"
                    " VALUES (?, ?, ?, ?)",
                    ((rid, email, name, _stamp()) for rid, email, name in recipients),
                )
                for key, value in {**meta, "frozen_at": _stamp()}.items():
                    self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return self.total()

    # -- reading --------------------------------------------------------------------------

    def total(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM recipients").fetchone()[0]

    def counts(self, settled: bool = False) -> dict[str, int]:
        """Rows per state, `reserved` counted as pending; `settled`: as the next run's `recover`
        will leave them (for `status` while no send runs: `sending` is unknown then)."""
        counts: dict[str, int] = dict.fromkeys(STATES, 0)
        unclear = (SENDING, RESERVED) if settled and self._rebooted() else (SENDING,) if settled else ()
        for state, count in self.db.execute("SELECT state, COUNT(*) FROM recipients GROUP BY state"):
            counts[UNKNOWN if state in unclear else PENDING if state == RESERVED else state] += count
        return counts

    def _rebooted(self) -> bool:
        """Whether the machine booted since rows were last reserved (module docstring)."""
        reserved_on = self.meta("reserved_on_boot")
        return bool(reserved_on) and reserved_on != boot_id()

    def rows(self, states: Iterable[str]) -> list[Row]:
        wanted = tuple(states)
        marks = ",".join("?" * len(wanted))
        cursor = self.db.execute(f"{ROW_SELECT} WHERE state IN ({marks}) ORDER BY seq", wanted)
        return [Row(*values) for values in cursor]

    def problems(self) -> list[Row]:
        """Rows that need a word in `status`: failed, unclear, deferred, and pending rows the
        server refused to take for now (they keep that reply)."""
        with self._sqlite_errors():
            cursor = self.db.execute(f"{ROW_SELECT} WHERE state IN (?, ?, ?) OR (state = ? AND last_code IS NOT NULL)"
                                     " ORDER BY seq", (FAILED, UNKNOWN, DEFERRED, PENDING))
            return [Row(*values) for values in cursor]

    def earliest_retry(self) -> float | None:
        return self.db.execute(
            "SELECT MIN(next_attempt_at) FROM recipients WHERE state = ?", (DEFERRED,)).fetchone()[0]

    def waiting_reply(self) -> str:
        """The server's reply ("451 4.7.1 Greylisted …") that keeps the first-due deferred row waiting."""
        found = self.db.execute("SELECT last_code, last_reply FROM recipients WHERE state = ? AND last_reply"
                                " IS NOT NULL ORDER BY next_attempt_at LIMIT 1", (DEFERRED,)).fetchone()
        if found is None:
            return ""
        code, text = found
        return f"{code} {text}".strip() if code else text  # as the Reply itself reads

    # -- changing -------------------------------------------------------------------------

    def recover(self) -> int:
        """After a dead run: `sending` becomes `unknown` (maybe delivered, maybe not). A `reserved`
        row, which no MAIL FROM was sent for, is due again -- unless the machine booted since it
        was reserved: then its `sending` may be the commit the power cut took (module docstring)."""
        self._rewind(0)
        rebooted = self._rebooted()
        with self._write():
            reserved = self.db.execute("UPDATE recipients SET state = ?, updated_at = ? WHERE state = ?",
                                       (UNKNOWN if rebooted else PENDING, _stamp(), RESERVED)).rowcount
            return reserved * rebooted + self.db.execute(
                "UPDATE recipients SET state = ?, updated_at = ? WHERE state = ?",
                (UNKNOWN, _stamp(), SENDING)).rowcount

    def retry(self, state: str) -> int:
        """Put `unknown` or `failed` rows back to `pending`, when the author asks for it."""
        self._rewind(0)
        with self._write():
            return self.db.execute(
                "UPDATE recipients SET state = ?, attempts = 0, updated_at = ? WHERE state = ?",
                (PENDING, _stamp(), state)).rowcount

    def holds_reserved(self) -> bool:
        """Whether the next `reserve` is handed out from memory, without waiting for the disk."""
        return bool(self._held)

    def reserve(self, now: float) -> Row | None:
        """The next due row, held for one worker; reserved in a commit that waits for the disk.

        A worker calls this while it waits for the server during its current message, before the
        final ".": the fsync then costs no time. Where the boot is known (module docstring) one
        fsync reserves a batch and the rows are handed out from memory; elsewhere each call
        reserves one row, and its fsync makes the current message's `sending` durable.
        """
        with self._lock:
            if self._held:
                return self._held.popleft()
        batch = RESERVE_BATCH if boot_id() else 1
        with self._synced():
            if self._held:  # another worker reserved a batch meanwhile
                return self._held.popleft()
            self.db.execute("BEGIN IMMEDIATE")
            try:
                if not self._boot_noted:
                    self.db.execute("INSERT OR REPLACE INTO meta VALUES ('reserved_on_boot', ?)", (boot_id(),))
                chosen = self._take_due(now, batch)
                if not chosen:
                    self._owe_fsync()  # nothing left to reserve, but the fsync is still owed
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")  # nothing reserved: no row stuck in `reserved`
                self._rewind(0)
                raise
            self._boot_noted = True
            self._held.extend(Row(*values) for values in chosen)
            return self._held.popleft() if self._held else None

    def _take_due(self, now: float, batch: int) -> list[tuple]:
        """Mark up to `batch` due rows `reserved` (in the open transaction). Rows `subscribers
        forget` changed meanwhile are left out, and the walk goes on past them."""
        while True:
            chosen: list[tuple] = []
            while len(chosen) < batch and (values := self._next_due(now)) is not None:
                if values[4] == PENDING:  # taken below, all in one statement
                    if chosen and values[0] <= chosen[-1][0]:
                        self._ahead = []  # the walk began again from the start: it found the rows chosen
                        break
                    self._ahead.pop()
                    self._walked = values[0]
                    chosen.append(values)
                elif self.db.execute("UPDATE recipients SET state = ?, updated_at = ? WHERE seq = ? AND state = ?",
                                     (RESERVED, _stamp(), values[0], values[4])).rowcount:
                    chosen.append(values)  # a deferred row due now
            pending = [values[0] for values in chosen if values[4] == PENDING]
            stamp = _stamp()
            taken = self.db.executemany(
                "UPDATE recipients SET state = ?, updated_at = ? WHERE seq = ? AND state = ?",
                ((RESERVED, stamp, seq, PENDING) for seq in pending)).rowcount if pending else 0
            if taken == len(pending):
                return chosen
            kept = {seq for seq in pending if self.db.execute(
                "SELECT state FROM recipients WHERE seq = ?", (seq,)).fetchone()[0] == RESERVED}
            chosen = [values for values in chosen if values[4] != PENDING or values[0] in kept]
            if chosen:
                return chosen
            # every row read ahead was taken away meanwhile: look again, they are not pending now

    def give_back(self) -> None:
        """Rows reserved and never handed to a worker go back to what they were: at the end of a
        run, still under its run lock (so a next `send` never finds them held by this one)."""
        with self._write():
            held, self._held = list(self._held), deque()
            self.db.executemany("UPDATE recipients SET state = ?, updated_at = ? WHERE seq = ? AND state = ?",
                                ((row.state, _stamp(), row.seq, RESERVED) for row in held))
            if held:
                self._rewind(min(row.seq for row in held) - 1)

    def start(self, row: Row, allowed: frozenset[str] | None = None) -> bool:
        """Mark a reserved row `sending`, committed (with the previous `finish`) before MAIL FROM.

        False if it must not go out: its subscriber is not in `allowed` (left, bounced or erased
        since the list was frozen; the row becomes `skipped`), or it is no longer reserved
        (`subscribers forget` scrubbed it meanwhile).
        """
        if allowed is not None and row.subscriber_id not in allowed:
            self._unsynced("UPDATE recipients SET state = ?, updated_at = ? WHERE seq = ? AND state = ?",
                           (SKIPPED, _stamp(), row.seq, RESERVED))
            return False
        return self._unsynced("UPDATE recipients SET state = ?, attempts = attempts + 1, updated_at = ?"
                              " WHERE seq = ? AND state = ?", (SENDING, _stamp(), row.seq, RESERVED)) == 1

    def _rewind(self, seq: int) -> None:
        """Rows at or below `seq` may be pending again: walk from there, read ahead anew."""
        self._walked, self._ahead = min(self._walked, seq), []

    def _next_due(self, now: float) -> tuple | None:
        """The lowest seq that is pending or a deferred row due by `now`.

        Rows are handed out in seq order, so pending rows are read ahead in seq order, a batch
        at a time, after the last one handed out (a released row moves the walk back), instead
        of keeping an index of states up to date; deferred rows have a small index of their own.
        Before saying "nothing left" the walk starts once more from the beginning, so a pending
        row is never overlooked.
        """
        due = self._deferred and self.db.execute(
            f"{ROW_SELECT} WHERE state = ? AND next_attempt_at <= ? ORDER BY seq LIMIT 1", (DEFERRED, now)).fetchone()
        if not self._ahead:
            for after in dict.fromkeys((self._walked, 0)):
                self._ahead = self.db.execute(f"{ROW_SELECT} WHERE seq > ? AND state = ? ORDER BY seq LIMIT ?",
                                              (after, PENDING, READ_AHEAD)).fetchall()[::-1]
                if self._ahead:
                    break
        pending = self._ahead[-1] if self._ahead else None
        if pending is None or (due and due[0] < pending[0]):
            return due or None
        return pending

    def release(self, row: Row, code: int | None = None, reply: str | None = None) -> None:
        """Give a reserved or started row back untouched: nothing was sent for it.

        With a reply (the server refused the account, not this person) the row keeps it, so
        `status` can say why it is still pending. A row `subscribers forget` made `skipped`
        meanwhile stays skipped.
        """
        with self._write():
            self.db.execute("UPDATE recipients SET state = ?, attempts = ?, updated_at = ?,"
                            " last_code = COALESCE(?, last_code), last_reply = COALESCE(?, last_reply)"
                            " WHERE seq = ? AND state IN (?, ?)",
                            (row.state, row.attempts, _stamp(), code, reply, row.seq, RESERVED, SENDING))
            self._rewind(row.seq - 1)
            self._deferred = self._deferred or row.state == DEFERRED

    def restore(self, row: Row, code: int, reply: str) -> None:
        """Undo a deferral that turned out to be the account's problem, not this person's: the
        row is as it was before that attempt (its retry window not started by it), with the reply."""
        with self._write():
            self.db.execute("UPDATE recipients SET state = ?, attempts = ?, next_attempt_at = ?, deferred_since = ?,"
                            " last_code = ?, last_reply = ?, updated_at = ? WHERE seq = ? AND state = ?",
                            (row.state, row.attempts, row.next_attempt_at, row.deferred_since, code, reply,
                             _stamp(), row.seq, DEFERRED))
            self._rewind(row.seq - 1)

    def finish(self, seq: int, state: RowState, code: int | None = None, reply: str | None = None,
               message_id: str | None = None, next_attempt_at: float | None = None,
               deferred_since: float | None = None) -> None:
        """Record the outcome of one attempt; `sent` gets its timestamp for the daily limit.

        Committed by the next write: normally the worker's next `start`, so the outcome and the
        next `sending` share one commit; at the end by `flush` or `close`. A run that dies before
        that leaves this row `sending`, which the next run reports as `unknown` -- just as a death
        between the server's 250 and a commit of its own would. A row erased while its message
        was on its way keeps no reply text.
        """
        self._deferred = self._deferred or state == DEFERRED
        self._unsynced(
            "UPDATE recipients SET state = ?, last_code = ?,"
            " last_reply = CASE WHEN email = ? THEN NULL ELSE ? END,"  # a reply may quote the address
            " message_id = COALESCE(?, message_id), next_attempt_at = ?, updated_at = ?,"
            " sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END, deferred_since = ? WHERE seq = ?",
            (state, code, ERASED, reply, message_id, next_attempt_at, _stamp(), state, _stamp(),
             deferred_since, seq), commit=False)

    def sent_rows(self) -> list[Row]:
        """Every row a message went out for (sent or unclear): what a bounce can belong to."""
        with self._sqlite_errors():
            cursor = self.db.execute(f"{ROW_SELECT} WHERE message_id IS NOT NULL AND state IN (?, ?) ORDER BY seq",
                                     (SENT, UNKNOWN))
            return [Row(*values) for values in cursor]

    def record_bounces(self, bounces: Iterable[tuple[int, str, str, str]], when: str) -> int:
        """Note bounces that came back (row seq, kind, status, diagnostic), in one synced commit.
        A hard bounce is never weakened by a later soft one, and a row that already says exactly
        this is left alone (a mail read twice changes nothing). Returns how many rows changed."""
        with self._write():
            return sum(self.db.execute(
                "UPDATE recipients SET bounce_kind = ?, bounce_status = ?, bounce_diagnostic = ?, bounced_at = ?"
                " WHERE seq = ? AND NOT (COALESCE(bounce_kind, '') = 'hard' AND ? != 'hard')"
                " AND NOT (COALESCE(bounce_kind, '') = ? AND COALESCE(bounce_status, '') = ?)",
                (kind, status, diagnostic, when, seq, kind, kind, status)).rowcount for seq, kind, status, diagnostic
                in bounces)

    def bounce_counts(self) -> dict[str, int]:
        with self._sqlite_errors():
            found = dict(self.db.execute("SELECT bounce_kind, COUNT(*) FROM recipients"
                                         " WHERE bounce_kind IS NOT NULL GROUP BY bounce_kind"))
        return {kind: found.get(kind, 0) for kind in BOUNCE_KINDS}

    def has_pending(self) -> bool:
        """Whether any row waits for its first try (pending, or reserved by a worker)."""
        with self._sqlite_errors():
            return self.db.execute("SELECT EXISTS (SELECT 1 FROM recipients WHERE state IN (?, ?))",
                                   (PENDING, RESERVED)).fetchone()[0] == 1

    def sent_since(self, since: str) -> int:
        """Messages sent at or after `since` (ISO 8601 in UTC), for [smtp] daily_limit."""
        with self._sqlite_errors():
            return self.db.execute("SELECT COUNT(*) FROM recipients WHERE state = ? AND sent_at >= ?",
                                   (SENT, since)).fetchone()[0]

    def erase(self, email: str) -> int:
        """Scrub one address from this journal (GDPR Art. 17); returns how many rows it was on.

        The row stays, so a resumed send still knows it is done, but without address, name or
        reply; a row not yet sent becomes `skipped`: an erased person is never mailed. The old
        bytes are overwritten, in the file and in its write-ahead log.
        """
        with self._lock, self._sqlite_errors():
            self.db.execute("PRAGMA secure_delete = ON")
        with self._write():
            rows = self.db.execute(
                "UPDATE recipients SET email = ?, name = '', last_reply = NULL,"
                " state = CASE WHEN state IN (?, ?, ?) THEN ? ELSE state END WHERE lower(email) = lower(?)",
                (ERASED, PENDING, RESERVED, DEFERRED, SKIPPED, email)).rowcount
        with self._lock, self._sqlite_errors():
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return rows

    def first_sent_at(self) -> str | None:
        """When the first message of this issue was accepted (UTC, ISO 8601); None while none was."""
        return self.db.execute("SELECT MIN(sent_at) FROM recipients WHERE state = ?", (SENT,)).fetchone()[0]


def journal_path(journal_dir: Path, slug: str) -> Path:
    return journal_dir / f"{slug}.sqlite"


def journals(journal_dir: Path) -> list[Path]:
    """Every issue's journal file, by name."""
    return sorted(journal_dir.glob("*.sqlite"))


def sent_today(journal_dir: Path) -> int:
    """Messages sent since local midnight across all issues, for [smtp] daily_limit.

    Fails closed: a journal that cannot be read raises JournalError rather than counting as
    zero, which would let a send exceed the provider's daily limit.
    """
    midnight = dt.datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    since = midnight.astimezone(dt.UTC).isoformat(timespec="seconds")
    total = 0
    for path in journals(journal_dir):
        with SendJournal(path) as journal:
            total += journal.sent_since(since)
    return total
