"""The send journal on its own: which row comes next, and when an outcome becomes durable."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter import journal as journal_module
from newsletter.erasure import erase_traces
from newsletter.journal import DEFERRED, FAILED, SENT, Row, SendJournal, boot_id


@pytest.fixture(params=["batch", "one at a time"])
def reserving(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where the boot is known (here: Linux), one fsync reserves a batch of rows (two here, so the
    tests see a batch end); where it is not, one row at a time."""
    if request.param == "batch":
        assert boot_id(), "this machine names its boot"
        monkeypatch.setattr(journal_module, "RESERVE_BATCH", 2)
    else:
        monkeypatch.setattr(journal_module, "boot_id", lambda: "")
    return request.param


def frozen_journal(path: Path, people: int) -> SendJournal:
    journal = SendJournal(path)
    journal.freeze([(f"id{n}", f"p{n}@example.org", "") for n in range(people)], {"issue": "test"})
    return journal


def claim(journal: SendJournal, now: float) -> Row | None:
    """Reserve and start the next row, as a worker does."""
    row = journal.reserve(now)
    assert row is None or journal.start(row)
    return row


def test_the_next_row_is_the_lowest_due_pending_or_deferred(tmp_path: Path, reserving: str) -> None:
    journal = frozen_journal(tmp_path / "j.sqlite", 4)
    first = claim(journal, 100.0)
    assert first is not None and first.seq == 1
    journal.finish(first.seq, DEFERRED, 451, "greylisted", next_attempt_at=200.0)
    second = claim(journal, 100.0)
    assert second is not None and second.seq == 2  # the deferred row is not due yet
    journal.finish(second.seq, SENT, 250, "ok")
    again = claim(journal, 300.0)
    assert again is not None and (again.seq, again.attempts) == (1, 1)  # due now, and before row 3
    journal.finish(again.seq, SENT, 250, "ok")
    assert [claim(journal, 300.0).seq for _ in range(2)] == [3, 4]
    assert claim(journal, 300.0) is None
    journal.close()


def test_what_a_killed_run_leaves_is_committed_at_each_step(tmp_path: Path, reserving: str) -> None:
    path = tmp_path / "j.sqlite"
    journal = frozen_journal(path, 3)
    other = SendJournal(path)  # another connection sees what a kill -9 would leave behind
    batch = reserving == "batch"

    def states() -> list[str]:
        return [state for (state,) in other.db.execute("SELECT state FROM recipients ORDER BY seq")]

    try:
        first = journal.reserve(0.0)
        assert first is not None
        assert states() == ["reserved", "reserved" if batch else "pending", "pending"]
        assert journal.start(first)
        assert states()[0] == "sending"  # committed before MAIL FROM
        second = journal.reserve(0.0)  # while the first message's data is on its way
        assert second is not None and states() == ["sending", "reserved", "pending"]
        journal.finish(first.seq, SENT, 250, "ok", "<m1@example.org>")
        assert states() == ["sending", "reserved", "pending"]  # a death now: `unknown`, never resent
        assert journal.start(second)
        assert states() == ["sent", "sending", "pending"]  # the outcome and the next start: one commit
        third = journal.reserve(0.0)
        assert third is not None and states() == ["sent", "sending", "reserved"]
        assert other.meta("reserved_on_boot") == journal_module.boot_id()
        journal.close()  # the worker died here: recovery decides
        recovered = SendJournal(path)
        assert recovered.recover() == 1
        assert [s for (s,) in recovered.db.execute("SELECT state FROM recipients ORDER BY seq")] == [
            "sent", "unknown", "pending"]  # `reserved` never saw a MAIL FROM: due again
        assert recovered.counts()["pending"] == 1
        recovered.close()
    finally:
        other.close()


def test_after_a_reboot_reserved_rows_are_unclear_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows reserved in a batch on another boot: a power cut may have taken the `sending` of a
    message that went out, so they are `unknown` (asked about), not mailed again."""
    monkeypatch.setattr(journal_module, "RESERVE_BATCH", 3)
    path = tmp_path / "j.sqlite"
    journal = frozen_journal(path, 4)
    first = claim(journal, 0.0)
    assert first is not None
    journal.finish(first.seq, SENT, 250, "ok")
    assert claim(journal, 0.0) is not None  # row 2 `sending`, row 3 still reserved
    journal.db.close()  # the power went out; row 4 was never reserved
    before = SendJournal(path)
    before.set_meta({"reserved_on_boot": "a boot before this one"})
    before.db.close()
    after = SendJournal(path)
    assert after.counts(settled=True)["unknown"] == 2  # what `status` says before the next send
    assert after.recover() == 2
    assert [s for (s,) in after.db.execute("SELECT state FROM recipients ORDER BY seq")] == [
        "sent", "unknown", "unknown", "pending"]
    after.close()


def test_rows_reserved_and_never_handed_out_are_given_back(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = frozen_journal(path, 3)
    row = claim(journal, 0.0)
    assert row is not None
    journal.finish(row.seq, SENT, 250, "ok")
    journal.give_back()  # the run ended (a limit, Ctrl-C) with rows 2 and 3 reserved in memory
    journal.close()
    reopened = SendJournal(path)
    assert [s for (s,) in reopened.db.execute("SELECT state FROM recipients ORDER BY seq")] == [
        "sent", "pending", "pending"]
    reopened.close()


def test_a_row_erased_while_read_ahead_does_not_end_the_walk(tmp_path: Path, reserving: str) -> None:
    """`subscribers forget` (another process) takes a row the journal had read ahead: the
    reservation goes on to the next one instead of saying that nothing is left."""
    journal = frozen_journal(tmp_path / "journal" / "x.sqlite", 4)
    for _ in range(2):
        row = claim(journal, 0.0)
        assert row is not None
        journal.finish(row.seq, SENT, 250, "ok")
    journal.commit()  # as before any wait: `forget` needs the write lock
    assert erase_traces(tmp_path, "p2@example.org") == (1, 0)
    following = claim(journal, 0.0)
    assert following is not None and following.seq == 4
    journal.close()


def test_a_row_erased_while_reserved_is_not_started(tmp_path: Path) -> None:
    journal = frozen_journal(tmp_path / "journal" / "x.sqlite", 2)
    row = journal.reserve(0.0)
    assert row is not None
    assert erase_traces(tmp_path, "p0@example.org") == (1, 0)  # `subscribers forget`, meanwhile
    assert not journal.start(row)
    journal.release(row)  # the worker gives it back: it stays skipped
    assert journal.counts()["skipped"] == 1
    journal.close()


def test_someone_who_left_is_skipped_at_start(tmp_path: Path) -> None:
    journal = frozen_journal(tmp_path / "j.sqlite", 2)
    row = journal.reserve(0.0)
    assert row is not None and not journal.start(row, frozenset({"id1"}))
    assert (journal.counts()["skipped"], journal.counts()["sending"]) == (1, 0)
    journal.close()


def test_a_row_given_back_or_retried_is_found_again(tmp_path: Path, reserving: str) -> None:
    journal = frozen_journal(tmp_path / "j.sqlite", 4)
    first, second = claim(journal, 0.0), claim(journal, 0.0)
    assert first is not None and second is not None
    journal.release(first)  # the provider said "too many": nothing went out for it
    assert claim(journal, 0.0).seq == first.seq  # before rows 3 and 4
    journal.finish(first.seq, FAILED, 550, "no")
    journal.finish(second.seq, SENT, 250, "ok")
    assert [claim(journal, 0.0).seq for _ in range(2)] == [3, 4]
    assert journal.retry(FAILED) == 1  # --retry-failed, behind the walk
    assert claim(journal, 0.0).seq == first.seq
    assert claim(journal, 0.0) is None
    journal.close()
