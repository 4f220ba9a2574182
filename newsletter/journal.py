"""The send journal: one SQLite row per recipient of an issue, so a send resumes exactly.

A row goes `pending` → `reserved` → `sending` → `sent` (or `deferred`, `failed`, `unknown`,
`skipped`). `sending` is committed before MAIL FROM, `sent` only after the server's 250 to
DATA. Rows found in `sending` when a run starts belong to a run that died mid-message; they
become `unknown` and are resent only when the author asks, so nobody gets a copy twice.

Durable without waiting for the disk: commits survive a killed process (synchronous=NORMAL),
and once per message one commit also waits for the disk (an fsync) -- the one that reserves
the worker's next row, made while the current message's data is on its way and before the
final "." that lets the server accept it. The fsync overlaps the network, and it makes every
earlier commit durable, this message's `sending` included. So after

- kill -9 or a crash: every commit is there. `sending` becomes `unknown`; `reserved` goes
  back to `pending` (its MAIL FROM never went out: `sending` is committed before it).
- a power cut: the commits since the last fsync may be gone. A message whose `sending` is
  gone never got its final "." (that waits for the fsync), so the server dropped it:
  `reserved` → `pending` is right. A message whose `sent` is gone shows `sending` and
  becomes `unknown`. Either way nobody is mailed twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from newsletter.errors import NewsletterError

PENDING, RESERVED, SENDING, SENT = "pending", "reserved", "sending", "sent"
DEFERRED, FAILED, UNKNOWN, SKIPPED = "deferred", "failed", "unknown", "skipped"
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
    sent_at TEXT
);
-- No index on every row's state: a change of state then writes the row's page alone, and
-- fewer pages make a faster fsync. Pending rows are found by walking seq (see _next_due).
DROP INDEX IF EXISTS recipients_state;
CREATE INDEX IF NOT EXISTS recipients_deferred ON recipients (seq) WHERE state = 'deferred';
"""
READ_AHEAD = 64  # pending rows fetched at once
ROW_SELECT = ("SELECT seq, subscriber_id, email, name, state, attempts, last_code, last_reply,"
              " message_id, next_attempt_at, sent_at FROM recipients")


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


_stamp_cache = (-1, "")


def _stamp() -> str:
    """Now in UTC to the second; formatted once per second, it is written twice per message."""
    global _stamp_cache
    second = int(time.time())
    if second != _stamp_cache[0]:
        _stamp_cache = (second, dt.datetime.fromtimestamp(second, dt.UTC).isoformat(timespec="seconds"))
    return _stamp_cache[1]


class SendJournal:
    """One issue's journal file. Only one `send` may hold it at a time (a file lock says so)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._walked = 0  # no pending row below this seq that this journal has not handed out
        self._ahead: list[tuple] = []  # pending rows read ahead, the next one last
        # timeout: wait for `subscribers forget` scrubbing this journal from another process
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # durable writes ask for FULL (module docstring)
        self.db.executescript(SCHEMA)
        # Only this journal's own `finish` makes rows deferred; until then no need to look for them.
        self._deferred = self.db.execute(
            "SELECT EXISTS (SELECT 1 FROM recipients WHERE state = ?)", (DEFERRED,)).fetchone()[0] == 1
        self.run_lock = FileLock(str(path) + ".lock")

    @classmethod
    def existing(cls, path: Path) -> SendJournal | None:
        return cls(path) if path.exists() else None

    def close(self) -> None:
        self.flush()
        self.db.close()

    def commit(self) -> None:
        """Commit what `finish` left open, without waiting for the disk: before a pause, so the
        write lock is not held while a send waits (`subscribers forget` must get in)."""
        with self._lock:
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
        with self._lock:
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

    @contextlib.contextmanager
    def _write_unsynced(self, commit: bool = True) -> Iterator[None]:
        """One change that need only survive a killed process: it joins the transaction `finish`
        left open (one commit for the outcome and the next `start`) and commits without waiting
        for the disk, or, with commit=False, leaves it open for the next write."""
        with self._lock:
            if not self.db.in_transaction:
                self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                if commit:
                    self.db.execute("COMMIT")

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
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

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

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for state, count in self.db.execute("SELECT state, COUNT(*) FROM recipients GROUP BY state"):
            counts[PENDING if state == RESERVED else state] += count
        return counts

    def rows(self, states: Iterable[str]) -> list[Row]:
        wanted = tuple(states)
        marks = ",".join("?" * len(wanted))
        cursor = self.db.execute(f"{ROW_SELECT} WHERE state IN ({marks}) ORDER BY seq", wanted)
        return [Row(*values) for values in cursor]

    def earliest_retry(self) -> float | None:
        return self.db.execute(
            "SELECT MIN(next_attempt_at) FROM recipients WHERE state = ?", (DEFERRED,)).fetchone()[0]

    # -- changing -------------------------------------------------------------------------

    def recover(self) -> int:
        """After a dead run: `sending` becomes `unknown` (maybe delivered, maybe not), and a
        `reserved` row, which no MAIL FROM was sent for, is due again."""
        self._rewind(0)
        with self._write():
            self.db.execute("UPDATE recipients SET state = ? WHERE state = ?", (PENDING, RESERVED))
            return self.db.execute(
                "UPDATE recipients SET state = ?, updated_at = ? WHERE state = ?",
                (UNKNOWN, _stamp(), SENDING)).rowcount

    def retry(self, state: str) -> int:
        """Put `unknown` or `failed` rows back to `pending`, when the author asks for it."""
        self._rewind(0)
        with self._write():
            return self.db.execute(
                "UPDATE recipients SET state = ?, attempts = 0, updated_at = ? WHERE state = ?",
                (PENDING, _stamp(), state)).rowcount

    def reserve(self, now: float) -> Row | None:
        """The next due row, held for one worker, in a commit that waits for the disk.

        A worker calls this while its current message's data is on its way, before the final
        ".": the fsync then costs no time, and it makes that message's `sending` durable. One
        statement in its own (autocommit) transaction: the least time before the fsync.
        """
        with self._synced():
            while (values := self._next_due(now)) is not None:
                if values[4] == PENDING:
                    self._ahead.pop()
                    self._walked = values[0]
                taken = self.db.execute(  # unless `subscribers forget` changed the row meanwhile
                    "UPDATE recipients SET state = ?, updated_at = ? WHERE seq = ? AND state = ?",
                    (RESERVED, _stamp(), values[0], values[4])).rowcount
                if taken:
                    return Row(*values)
            self._owe_fsync()  # nothing left to reserve, but the fsync is still owed
            return None

    def start(self, row: Row, allowed: frozenset[str] | None = None) -> bool:
        """Mark a reserved row `sending`, committed (with the previous `finish`) before MAIL FROM.

        False if it must not go out: its subscriber is not in `allowed` (left, bounced or erased
        since the list was frozen; the row becomes `skipped`), or it is no longer reserved
        (`subscribers forget` scrubbed it meanwhile).
        """
        with self._write_unsynced():
            if allowed is not None and row.subscriber_id not in allowed:
                self.db.execute("UPDATE recipients SET state = ?, updated_at = ? WHERE seq = ? AND state = ?",
                                (SKIPPED, _stamp(), row.seq, RESERVED))
                return False
            return self.db.execute(
                "UPDATE recipients SET state = ?, attempts = attempts + 1, updated_at = ?"
                " WHERE seq = ? AND state = ?", (SENDING, _stamp(), row.seq, RESERVED)).rowcount == 1

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

    def release(self, row: Row) -> None:
        """Give a reserved or started row back untouched: nothing was sent for it.

        A row `subscribers forget` made `skipped` meanwhile stays skipped.
        """
        with self._write():
            self.db.execute("UPDATE recipients SET state = ?, attempts = ?, updated_at = ?"
                            " WHERE seq = ? AND state IN (?, ?)",
                            (row.state, row.attempts, _stamp(), row.seq, RESERVED, SENDING))
            self._rewind(row.seq - 1)
            self._deferred = self._deferred or row.state == DEFERRED

    def finish(self, seq: int, state: str, code: int | None = None, reply: str | None = None,
               message_id: str | None = None, next_attempt_at: float | None = None) -> None:
        """Record the outcome of one attempt; `sent` gets its timestamp for the daily limit.

        Committed by the next write: normally the worker's next `start`, so the outcome and the
        next `sending` share one commit; at the end by `flush` or `close`. A run that dies before
        that leaves this row `sending`, which the next run reports as `unknown` -- just as a death
        between the server's 250 and a commit of its own would. A row erased while its message
        was on its way keeps no reply text.
        """
        self._deferred = self._deferred or state == DEFERRED
        with self._write_unsynced(commit=False):
            self.db.execute(
                "UPDATE recipients SET state = ?, last_code = ?,"
                " last_reply = CASE WHEN email = ? THEN NULL ELSE ? END,"  # a reply may quote the address
                " message_id = COALESCE(?, message_id), next_attempt_at = ?, updated_at = ?,"
                " sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END WHERE seq = ?",
                (state, code, ERASED, reply, message_id, next_attempt_at, _stamp(), state, _stamp(), seq))

    def first_sent_at(self) -> str | None:
        """When the first message of this issue was accepted (UTC, ISO 8601); None while none was."""
        return self.db.execute("SELECT MIN(sent_at) FROM recipients WHERE state = ?", (SENT,)).fetchone()[0]


def journal_path(journal_dir: Path, slug: str) -> Path:
    return journal_dir / f"{slug}.sqlite"


def sent_today(journal_dir: Path) -> int:
    """Messages sent since local midnight across all issues, for [smtp] daily_limit."""
    midnight = dt.datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    since = midnight.astimezone(dt.UTC).isoformat(timespec="seconds")
    total = 0
    for path in sorted(journal_dir.glob("*.sqlite")):
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            total += db.execute("SELECT COUNT(*) FROM recipients WHERE state = 'sent' AND sent_at >= ?",
                                (since,)).fetchone()[0]
        except sqlite3.Error:
            pass
        finally:
            db.close()
    return total
