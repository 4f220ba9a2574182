"""Sorting mails on the other cores while the mailbox is read: `returns.classify` costs more
than fetching the mail, so the two overlap.

`Sorter.submit` hands over one fetched chunk, `take` gives back the results of the oldest chunk
submitted. There is one helper per core, and each has at most one chunk at a time (the next is
fetched meanwhile), so neither side can block the other on a full pipe. The helpers are forked
(Linux, and only while this process has no other threads): they start in milliseconds with
everything already imported. Elsewhere, for a few mails, or for a chunk whose helper died, the
mails are sorted here, with the same results.

A helper only ever sees mail bytes and gives back `Returned`s; it ignores Ctrl-C (the command
handles that) and ends when this process closes the pipe or dies.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
from collections import deque
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
    def __init__(self, ours: Ours, expected: int, helpers: int | None = None) -> None:
        self.ours = ours
        self._idle: list[tuple[Any, Any]] = []  # (process, pipe) of helpers waiting for a chunk
        self._queue: deque[tuple[Any, dict[int, bytes], Sorted]] = deque()  # oldest first
        if expected >= WORTH_A_HELPER and sys.platform == "linux" and threading.active_count() == 1:
            import multiprocessing

            context = multiprocessing.get_context("fork")
            count = helpers or max(1, len(os.sched_getaffinity(0)))
            gc.freeze()  # what the helpers inherit is never scanned by their collector (nor copied for it)
            try:
                for n in range(count):
                    mine, theirs = context.Pipe()
                    others = [conn for _, conn in self._idle]  # the helpers before: their pipes are not its own
                    process = context.Process(target=_sort_forever, args=(theirs, [mine, *others], ours), daemon=True,
                                              name=f"newsletter-sorter-{n + 1}")
                    process.start()
                    theirs.close()
                    self._idle.append((process, mine))
            finally:
                gc.unfreeze()

    @property
    def full(self) -> bool:
        """Every live helper has a chunk (or, with none, one is sorted here): take() one first."""
        working = sum(1 for helper, _, _ in self._queue if helper is not None)
        return len(self._queue) >= max(1, len(self._idle) + working)

    @property
    def busy(self) -> bool:
        """Chunks are waiting to be taken."""
        return bool(self._queue)

    def submit(self, mails: dict[int, bytes]) -> None:
        assert not self.full, "take() a chunk first"
        while self._idle:
            helper = self._idle.pop()
            try:
                helper[1].send(mails)
            except OSError:
                self._stop(helper)
                continue
            self._queue.append((helper, mails, {}))
            return
        self._queue.append((None, mails, sort_here(mails, self.ours)))

    def take(self) -> Sorted:
        """The results of the oldest chunk submitted."""
        helper, mails, done = self._queue.popleft()
        if helper is None:
            return done
        try:
            results = dict(helper[1].recv())
        except (EOFError, OSError):  # the helper died: sort its chunk here; the others go on
            self._stop(helper)
            return sort_here(mails, self.ours)
        self._idle.append(helper)
        return results

    def close(self) -> None:
        for helper in [*self._idle, *(h for h, _, _ in self._queue if h is not None)]:
            self._stop(helper)
        self._idle, self._queue = [], deque()

    def _stop(self, helper: tuple[Any, Any]) -> None:
        process, conn = helper
        with contextlib.suppress(OSError):
            conn.close()
        process.join(2)
        if process.is_alive():
            process.kill()

    def __enter__(self) -> Sorter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _sort_forever(conn: Any, not_mine: list[Any], ours: Ours) -> None:
    """The helper: sort each chunk it is given, until the pipe closes (the command ended or died)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for end in not_mine:  # else its copies of the parent's ends would keep those pipes open when the parent dies
        end.close()
    # The cyclic garbage collector once per chunk rather than every few hundred objects: parsing
    # mail makes many objects and few cycles (a parser and its generator), a sixth of the time.
    gc.disable()
    while True:
        try:
            mails = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(list(sort_here(mails, ours).items()))
        del mails
        gc.collect()  # what it inherited is frozen: only its own objects are looked at
