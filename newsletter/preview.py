"""What one recipient would see: the data behind `newsletter preview` and `render`."""

from __future__ import annotations

from dataclasses import dataclass

from newsletter.check import CheckReport, check_issue
from newsletter.errors import IssueError, SubscriberError
from newsletter.issue import Issue
from newsletter.merge import fill, recipient_values, split_slots
from newsletter.render import protect_fields
from newsletter.subscribers import Subscriber
from newsletter.tokens import unsubscribe_subject, unsubscribe_url
from newsletter.workspace import Workspace

SAMPLE = Subscriber(id="vorschau", email="alex@example.org", name="Alex Beispiel", status="active")


@dataclass(frozen=True)
class Preview:
    report: CheckReport
    recipient: Subscriber
    sender: str
    to: str
    html: str
    text: str
    markdown: str  # the body with this person's values, for the terminal

    @property
    def links(self) -> list[str]:
        return self.report.rendered.links if self.report.rendered else []


def sample_recipient(workspace: Workspace, email: str | None = None) -> Subscriber:
    """The person a preview is made for: --as EMAIL, else the first active subscriber, else a sample."""
    people = workspace.store().load()
    if email:
        found = people.get(email)
        if found is None:
            raise SubscriberError(f"{email}: nicht in der Abonnent:innen-Liste")
        return found
    return next((s for s in people if s.receives_mail), SAMPLE)


def recipient_merge_values(workspace: Workspace, person: Subscriber) -> dict[str, str]:
    url = unsubscribe_url(workspace.config.base_url, workspace.secret(), person.id)
    by_mail = unsubscribe_subject(workspace.secret(), person.id, workspace.config.newsletter.language)
    return recipient_values(person.email, person.name, url, by_mail)


def build_preview(workspace: Workspace, issue: Issue, as_email: str | None = None) -> Preview:
    """Check the issue and personalise it for one person; IssueError if it cannot be rendered."""
    report = check_issue(workspace, issue)
    if report.rendered is None:
        raise IssueError(str(report.errors[0]))
    person = sample_recipient(workspace, as_email)
    values = recipient_merge_values(workspace, person)
    html, text = report.rendered.personalize(values)
    table, body, _ = protect_fields(issue)
    nl = workspace.config.newsletter
    return Preview(
        report=report, recipient=person,
        sender=f"{nl.from_name} <{nl.from_email}>" if nl.from_name else nl.from_email,
        to=f"{person.name} <{person.email}>" if person.name else person.email,
        html=html, text=text,
        markdown=fill(split_slots(body), table.slots, values, escape=False),
    )
