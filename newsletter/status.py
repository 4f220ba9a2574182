"""What the send journals say: per issue, how many in each state, and why the rest wait."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from newsletter.journal import STATES, SendJournal, journal_path, journals
from newsletter.workspace import Workspace


@dataclass(frozen=True)
class RowProblem:
    email: str
    state: str
    code: int | None
    reply: str | None


@dataclass
class IssueStatus:
    issue: str
    subject: str
    total: int
    counts: dict[str, int]
    last_outcome: str = ""
    last_reply: str = ""
    problems: list[RowProblem] = field(default_factory=list)
    bounces: dict[str, int] = field(default_factory=dict)  # what came back later (newsletter inbox)

    def to_json(self, with_problems: bool) -> dict[str, Any]:
        data: dict[str, Any] = {"issue": self.issue, "subject": self.subject, "total": self.total,
                                **{state: self.counts[state] for state in STATES},
                                "last_outcome": self.last_outcome or None, "last_reply": self.last_reply or None,
                                "bounces": self.bounces}
        if with_problems:
            data["problems"] = [{"email": p.email, "state": p.state, "code": p.code, "reply": p.reply}
                                for p in self.problems]
        return data


def send_status(workspace: Workspace, slug: str | None = None, problems: bool = False) -> list[IssueStatus]:
    """Every journal (or one issue's). Rows a dead run left `sending` count as unknown, which is
    what the next `send` will call them; while a send runs they are in flight."""
    paths = journals(workspace.journal_dir) if slug is None else [journal_path(workspace.journal_dir, slug)]
    results = []
    for path in paths:
        with SendJournal(path) as journal:
            counts = journal.counts(settled=not journal.is_running())
            rows = journal.problems() if problems else []
            results.append(IssueStatus(
                issue=path.stem, subject=journal.meta("subject") or "", total=journal.total(), counts=counts,
                last_outcome=journal.meta("last_outcome") or "", last_reply=journal.meta("last_reply") or "",
                problems=[RowProblem(r.email, r.state, r.last_code, r.last_reply) for r in rows],
                bounces=journal.bounce_counts()))
    return results
