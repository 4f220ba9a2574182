"""Check an issue before it goes out: errors stop a send, warnings only inform."""

from __future__ import annotations

from dataclasses import dataclass, field

from newsletter.doctor import doctor_hint
from newsletter.errors import IssueError
from newsletter.issue import Issue
from newsletter.merge import recipient_values
from newsletter.message import MessageFactory, Recipient, validate_message
from newsletter.render import RenderedIssue, protect_fields, render_issue
from newsletter.workspace import Workspace

GMAIL_CLIP_BYTES = 100_000
SUBJECT_MAX = 78


@dataclass(frozen=True)
class Finding:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class CheckReport:
    issue: Issue
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    rendered: RenderedIssue | None = None
    html_bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def check_issue(workspace: Workspace, issue: Issue) -> CheckReport:
    """Everything that would make this issue wrong or unlawful in someone's inbox."""
    config = workspace.config
    report = CheckReport(issue)
    path = str(issue.path)
    error = lambda message, where=path: report.errors.append(Finding(where, message))  # noqa: E731
    warn = lambda message, where=path: report.warnings.append(Finding(where, message))  # noqa: E731

    if not issue.subject:
        error("kein Betreff (subject) im Kopfbereich")
    elif len(issue.subject) > SUBJECT_MAX:
        warn(f"Betreff ist {len(issue.subject)} Zeichen lang; auf dem Handy sind oft nur ~40 sichtbar, "
             f"empfohlen höchstens {SUBJECT_MAX}")
    for key, value in (("subject", issue.subject), ("preheader", issue.preheader)):
        if "{{" in value:
            error(f"{key}: Platzhalter sind hier nicht möglich, nur im Text")
    if not issue.preheader:
        warn("kein Vorschautext (preheader): das Postfach zeigt dann den Anfang der Mail")
    if not issue.body.strip():
        error("der Text ist leer", issue.where())
    if bool(issue.button_text) != bool(issue.button_url):
        error("button_text und button_url gehören zusammen: beide angeben oder keinen")
    for missing in config.imprint.missing():
        error(f"[imprint] {missing} ist leer; das Impressum ist in jeder Mail Pflicht", str(config.path))
    if not config.base_url:
        error("[newsletter] base_url fehlt; ohne sie hat die Mail keinen Abmeldelink", str(config.path))
    elif not config.base_url.startswith("https://"):
        error("[newsletter] base_url muss mit https:// beginnen (Ein-Klick-Abmeldung nach RFC 8058)",
              str(config.path))
    if hint := doctor_hint(config, workspace.state_dir):
        warn(hint, "newsletter doctor")

    _, _, problems = protect_fields(issue)
    for problem in problems:
        error(problem.message, issue.where(problem.line))
    if problems:
        return report

    try:
        rendered = render_issue(workspace, issue)
    except IssueError as exc:
        error(str(exc).removeprefix(f"{path}: "))
        return report
    report.rendered = rendered
    html, _ = rendered.personalize(recipient_values("vorschau@example.org", "Vorname Nachname",
                                                    "https://example.org/u/" + "x" * 40))
    report.html_bytes = len(html.encode())
    if report.html_bytes >= GMAIL_CLIP_BYTES:
        error(f"HTML ist {report.html_bytes // 1000} KB groß; Gmail kürzt Mails ab etwa 100 KB "
              "und versteckt dann Impressum und Abmeldelink")
    try:
        sample = MessageFactory(rendered, config, b"check").build(Recipient("check", "vorschau@example.org", "Vorname"))
    except ValueError as exc:  # e.g. a sender domain that has no ASCII form
        error(f"aus dieser Ausgabe lässt sich keine gültige Mail bauen: {exc}")
    else:
        for rule in validate_message(sample.data):
            error(f"die fertige Mail verletzt eine Regel: {rule}")
    if "<mj-" in html:
        error("im HTML stehen noch MJML-Tags (<mj-…>); bitte templates/newsletter.mjml prüfen")
    for src, alt in rendered.images:
        if not alt.strip():
            warn(f"Bild ohne Beschreibung (Alt-Text): {src}", _line_of(issue, src))
        if src.startswith("http://"):
            warn(f"Bild über http:// statt https://: {src}", _line_of(issue, src))
    for link in rendered.links:
        if link.startswith("http://"):
            warn(f"Link ohne https: {link}", _line_of(issue, link))
    return report


def _line_of(issue: Issue, needle: str) -> str:
    for index, line in enumerate(issue.body.split("\n")):
        if needle in line:
            return issue.where(index)
    return str(issue.path)
