"""The send journal on its own: which row comes next, and when an outcome becomes durable."""

from __future__ import annotations

from pathlib import Path

from newsletter.journal import DEFERRED, SENT, SendJournal


def frozen_journal(path: Path, people: int) -> SendJournal:
    journal = SendJournal(path)
    journal.freeze([(f"id{n}", f"p{n}@example.org", "") for n in range(people)], {"issue": "test"})
    return journal


def test_claim_takes_the_lowest_due_row_pending_or_deferred(tmp_path: Path) -> None:
    journal = frozen_journal(tmp_path / "j.sqlite", 4)
    first = journal.claim(100.0)
    assert first is not None and first.seq == 1
    journal.finish(first.seq, DEFERRED, 451, "greylisted", next_attempt_at=200.0)
    second = journal.claim(100.0)
    assert second is not None and second.seq == 2  # the deferred row is not due yet
    journal.finish(second.seq, SENT, 250, "ok")
    again = journal.claim(300.0)
    assert again is not None and (again.seq, again.attempts) == (1, 1)  # due now, and before row 3
    journal.finish(again.seq, SENT, 250, "ok")
    assert [journal.claim(300.0).seq for _ in range(2)] == [3, 4]
    assert journal.claim(300.0) is None
    journal.close()


def test_an_outcome_is_durable_with_the_next_claim_or_on_close(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = frozen_journal(path, 3)
    other = SendJournal(path)  # another connection sees what a crash would leave behind
    try:
        row = journal.claim(0.0)
        assert row is not None
        assert other.counts()["sending"] == 1  # committed before anything goes out
        journal.finish(row.seq, SENT, 250, "ok", "<m1@example.org>")
        assert other.counts()["sending"] == 1  # a death now: `unknown`, never resent
        journal.claim(0.0)
        assert (other.counts()["sent"], other.counts()["sending"]) == (1, 1)  # one commit for both
        journal.finish(2, SENT, 250, "ok", "<m2@example.org>")
        journal.close()
        assert (other.counts()["sent"], other.counts()["sending"]) == (2, 0)
    finally:
        other.close()
