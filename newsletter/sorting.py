"""Sorting mails on the second core while the mailbox is read: `returns.classify` costs about
as much as fetching the mail, so the two overlap.

`Sorter.submit` hands over one fetched chunk, `take` gives back its results in the same order.
At most one chunk is with the helper at a time (the next is fetched meanwhile), so neither side
can block the other on a full pipe. The helper is forked (Linux, and only while this process has
no other threads): it starts in milliseconds with everything already imported. Elsewhere, for a
few mails, or if the helper dies, the mails are sorted here, with the same results.

The helper only ever sees mail bytes and gives back `Returned`s; it ignores Ctrl-C (the command
handles that) and ends when this process closes the pipe or dies.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Any

from newsletter.returns import Ours, Returned, classify

Sorted = dict[int, Returned | None]  # uid -> what the mail is; None: not readable (broken MIME)
WORTH_A_HELPER = 100  # mails; fewer are sorted here, faster than starting a process


def sort_here(mails: dict[int, bytes], ours: Ours) -> Sorted:
    results: Sorted = {}
    for uid, raw in mails.items():
        try:
            results[uid] = classify(raw, ours)
        except Exception:  # noqa: BLE001 - broken MIME must not stop her inbox; the mail stays
            results[uid] = None
    return results


class Sorter:
    def __init__(self, ours: Ours, expected: int) -> None:
        self.ours = ours
        self._held: dict[int, bytes] | None = None  # the chunk with the helper, kept for a fallback
        self._done: Sorted | None = None
        self._conn: Any = None
        self._process: Any = None
        if expected >= WORTH_A_HELPER and sys.platform == "linux" and threading.active_count() == 1:
            import multiprocessing

            context = multiprocessing.get_context("fork")
            mine, theirs = context.Pipe()
            self._process = context.Process(target=_sort_forever, args=(theirs, mine, ours), daemon=True,
                                            name="newsletter-sorter")
            self._process.start()
            theirs.close()
            self._conn = mine

    def submit(self, mails: dict[int, bytes]) -> None:
        assert self._held is None and self._done is None, "take() the last chunk first"
        if self._conn is not None:
            try:
                self._conn.send(mails)
                self._held = mails
                return
            except OSError:
                self._stop()
        self._done = sort_here(mails, self.ours)

    def take(self) -> Sorted:
        if self._held is not None:
            mails, self._held = self._held, None
            try:
                return dict(self._conn.recv())
            except (EOFError, OSError):  # the helper died: sort this chunk here, and the rest too
                self._stop()
                return sort_here(mails, self.ours)
        done, self._done = self._done or {}, None
        return done

    def close(self) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None
        if self._process is not None:
            self._process.join(2)
            if self._process.is_alive():
                self._process.kill()
            self._process = None

    def __enter__(self) -> Sorter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _sort_forever(conn: Any, parents_end: Any, ours: Ours) -> None:
    """The helper: sort each chunk it is given, until the pipe closes (the command ended or died)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parents_end.close()  # else its own copy of that end would keep the pipe open when the parent dies
    while True:
        try:
            mails = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(list(sort_here(mails, ours).items()))
