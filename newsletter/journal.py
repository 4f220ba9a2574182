"""The send journal: one SQLite row per recipient of an issue, so a send resumes exactly.

A row is `sending` (committed) before MAIL FROM and `sent` only after the server's 250 to
DATA. Rows found in `sending` when a run starts belong to a run that died mid-message; they
become `unknown` and are resent only when the author asks, so nobody gets a copy twice.

Every commit is an fsync (synchronous=FULL), and a send commits once per message: the outcome
of one message is written in the same transaction that claims the next one.
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

PENDING, SENDING, SENT = "pending", "sending", "sent"
DEFERRED, FAILED, UNKNOWN, SKIPPED = "deferred", "failed", "unknown", "skipped"
STATES = (PENDING, SENDING, SENT, DEFERRED, FAILED, UNKNOWN, SKIPPED)

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
CREATE INDEX IF NOT EXISTS recipients_state ON recipients (state, seq);
"""
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
        # timeout: wait for `subscribers forget` scrubbing this journal from another process
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed `sending` survives even a power cut, so nobody is mailed twice.
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self.run_lock = FileLock(str(path) + ".lock")

    @classmethod
    def existing(cls, path: Path) -> SendJournal | None:
        return cls(path) if path.exists() else None

    def close(self) -> None:
        self.flush()
        self.db.close()

    def flush(self) -> None:
        """Commit an outcome that `finish` left for the next claim to commit."""
        with self._lock:
            if self.db.in_transaction:
                self.db.execute("COMMIT")

    @contextlib.contextmanager
    def _write(self, commit: bool = True) -> Iterator[None]:
        """One change under the lock, in the open transaction if `finish` left one (it then
        commits with this change: one fsync for both), else in a new one."""
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
        """Fix the recipient list (id, email, name) once, in one transaction."""
        self.flush()
        with self._lock:
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
            counts[state] = count
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
        """Rows a dead run left in `sending` become `unknown`: maybe delivered, maybe not."""
        with self._write():
            return self.db.execute(
                "UPDATE recipients SET state = ?, updated_at = ? WHERE state = ?",
                (UNKNOWN, _stamp(), SENDING)).rowcount

    def retry(self, state: str) -> int:
        """Put `unknown` or `failed` rows back to `pending`, when the author asks for it."""
        with self._write():
            return self.db.execute(
                "UPDATE recipients SET state = ?, attempts = 0, updated_at = ? WHERE state = ?",
                (PENDING, _stamp(), state)).rowcount

    def claim(self, now: float, allowed: frozenset[str] | None = None) -> Row | None:
        """The next due row, marked `sending` and committed before anything goes out.

        Rows whose subscriber is not in `allowed` (left, bounced or erased since the list was
        frozen) become `skipped` instead. The same commit makes the previous `finish` durable.
        """
        with self._write():
            while True:
                values = self._next_due(now)
                if values is None:
                    return None
                row = Row(*values)
                if allowed is not None and row.subscriber_id not in allowed:
                    self.db.execute("UPDATE recipients SET state = ?, updated_at = ? WHERE seq = ?",
                                    (SKIPPED, _stamp(), row.seq))
                    continue
                self.db.execute(
                    "UPDATE recipients SET state = ?, attempts = attempts + 1, updated_at = ? WHERE seq = ?",
                    (SENDING, _stamp(), row.seq))
                return row

    def _next_due(self, now: float) -> tuple | None:
        """The lowest seq that is pending or a deferred row due by `now`.

        Two index searches: a single `state = ? OR (state = ? AND …)` query made SQLite collect
        and sort every pending row on each claim, quadratic over a whole send.
        """
        pending = self.db.execute(f"{ROW_SELECT} WHERE state = ? ORDER BY seq LIMIT 1", (PENDING,)).fetchone()
        due = self.db.execute(f"{ROW_SELECT} WHERE state = ? AND next_attempt_at <= ? ORDER BY seq LIMIT 1",
                              (DEFERRED, now)).fetchone()
        if pending is None or (due is not None and due[0] < pending[0]):
            return due
        return pending

    def release(self, row: Row) -> None:
        """Give a claimed row back untouched: nothing was sent for it."""
        with self._write():
            self.db.execute("UPDATE recipients SET state = ?, attempts = ?, updated_at = ? WHERE seq = ?",
                            (row.state, row.attempts, _stamp(), row.seq))

    def finish(self, seq: int, state: str, code: int | None = None, reply: str | None = None,
               message_id: str | None = None, next_attempt_at: float | None = None) -> None:
        """Record the outcome of one attempt; `sent` gets its timestamp for the daily limit.

        Committed by the next write: normally the worker's next `claim`, so the outcome and the
        next `sending` share one fsync; at the end by `flush` or `close`. A run that dies before
        that leaves this row `sending`, which the next run reports as `unknown` -- just as a death
        between the server's 250 and a commit of its own would.
        """
        with self._write(commit=False):
            self.db.execute(
                "UPDATE recipients SET state = ?, last_code = ?, last_reply = ?,"
                " message_id = COALESCE(?, message_id), next_attempt_at = ?, updated_at = ?,"
                " sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END WHERE seq = ?",
                (state, code, reply, message_id, next_attempt_at, _stamp(), state, _stamp(), seq))


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
