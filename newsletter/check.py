"""Check an issue before it goes out: errors stop a send, warnings only inform."""

from __future__ import annotations

import re
import statistics
import tomllib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from newsletter import prose
from newsletter.config import HTTPS_ONLY
from newsletter.doctor import doctor_hint
from newsletter.errors import IssueError
from newsletter.issue import FENCE, Issue
from newsletter.merge import ANY_FIELD, FIELD, Slot, is_title, recipient_values
from newsletter.message import MessageFactory, Recipient, validate_message
from newsletter.render import RenderedIssue, markdown, protect_fields, render_issue
from newsletter.workspace import SKELETON_DIR, Workspace, default_templates_dir

GMAIL_CLIP_BYTES = 100_000
SUBJECT_MAX = 78
LONG_PARAGRAPH_WORDS = 120  # a paragraph this long, three times the others, is a wall of text on a phone
EXAMPLE_KEYS = {  # what `init` writes as an example, and what the author has to put there instead
    "from_name": "deinen Namen eintragen, so wie er als Absender im Postfach stehen soll",
    "from_email": "die Adresse eintragen, von der du sendest (eine Adresse deiner eigenen Domain)",
    "base_url": "die öffentliche https-Adresse von `newsletter serve` eintragen, sonst führt der Abmeldelink "
                "ins Leere (docs/serve.md)",
    "website": "die Adresse deiner Website eintragen (sie steht in jeder Mail unter dem Text)",
}
FIELD_WORDS = {"first_name": "keinen Vornamen", "last_name": "keinen Nachnamen", "name": "keinen Namen"}


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


def check_issue(workspace: Workspace, issue: Issue,
                readers: Iterable[tuple[str, str, str]] | None = None) -> CheckReport:
    """Everything that would make this issue wrong or unlawful in someone's inbox.

    `readers` (id, email, name of everyone it goes to) spares a send reading its list twice.
    """
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
    config_line = _config_lines(config.path)
    for missing in config.imprint.missing():
        error(f"[imprint] {missing} ist leer; das Impressum ist in jeder Mail Pflicht",
              config_line("imprint", missing))
    if not config.base_url:
        error("[newsletter] base_url fehlt; ohne sie hat die Mail keinen Abmeldelink", str(config.path))
    elif not config.base_url.startswith("https://"):
        error(HTTPS_ONLY, config_line("newsletter", "base_url"))
    for key, example in _init_examples().items():
        if getattr(config.newsletter, key) == example:
            error(f"[newsletter] {key} ist noch das Beispiel „{example}“ aus `newsletter init`: {EXAMPLE_KEYS[key]}",
                  config_line("newsletter", key))
    for line, text in _skeleton_lines(workspace, issue):
        error(f"„{_snippet(text)}“ ist noch der Platzhaltertext aus `newsletter new`: durch deinen eigenen "
              "Text ersetzen oder löschen", issue.where(line))
    if hint := doctor_hint(config, workspace.state_dir):
        warn(hint, "newsletter doctor")

    table, body, problems = protect_fields(issue)
    for problem in problems:
        error(problem.message, issue.where(problem.line))
    if problems:
        return report
    _check_names(workspace, issue, table.slots, error, warn, readers)
    for line, message in sorted(_text_findings(issue, body, workspace.config.newsletter.language)):
        warn(message, issue.where(line))

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


def _config_lines(path: Path) -> Callable[[str, str], str]:
    """"file:line" of a key in newsletter.toml (the file alone if the key is not written there)."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        lines = []

    def where(section: str, key: str) -> str:
        current = ""
        for number, line in enumerate(lines, start=1):
            if header := re.match(r"\s*\[\s*([\w.-]+)\s*\]", line):
                current = header.group(1)
            elif current == section and re.match(rf"\s*{re.escape(key)}\s*=", line):
                return f"{path}:{number}"
        return str(path)

    return where


def _init_examples() -> dict[str, str]:
    """The example values `init` writes into newsletter.toml, read from the file it copies."""
    with (SKELETON_DIR / "newsletter.toml").open("rb") as handle:
        section = tomllib.load(handle)["newsletter"]
    return {key: section[key] for key in EXAMPLE_KEYS if section.get(key)}


def _skeleton_lines(workspace: Workspace, issue: Issue) -> list[tuple[int, str]]:
    """Lines of the issue that are still the placeholder text `newsletter new` wrote (0-based body lines).

    The skeleton comes from templates/issue.md, the workspace's own and the shipped one; its
    headings, merge fields and short closings ("Herzlich,") are the author's to keep.
    """
    placeholders: set[str] = set()
    for folder in (workspace.templates_dir, default_templates_dir()):
        try:
            source = (folder / "issue.md").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        text = workspace.templates.from_string(source).render(title="", subject='""', date="2000-01-01")
        body = text.split(f"\n{FENCE}\n", 1)[-1]
        for line in body.splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "{{" not in line and (len(line.split()) >= 3 or "…" in line):
                placeholders.add(line)
    return [(index, line.strip()) for index, line in enumerate(issue.body.split("\n"))
            if line.strip() in placeholders]


def _check_names(workspace: Workspace, issue: Issue, slots: list[Slot], error: Callable[[str, str], None],
                 warn: Callable[[str, str], None], readers: Iterable[tuple[str, str, str]] | None) -> None:
    """Name fields without a default that some readers have no value for, and titles before first names."""
    bare = [name for name in FIELD_WORDS if Slot(name) in slots]
    uses_first_name = any(slot.field == "first_name" for slot in slots)
    if not bare and not uses_first_name:
        return
    missing: Counter[str] = Counter()
    titles: Counter[str] = Counter()
    count = 0
    for _, email, full_name in readers if readers is not None else (
            (p.id, p.email, p.name) for p in workspace.store().active()):
        count += 1
        values = recipient_values(email, full_name)
        missing.update(name for name in bare if not values[name])
        title = full_name.split(" ", 1)[0]
        if uses_first_name and full_name and is_title(title):
            titles[title] += 1
    lines = issue.body.split("\n")
    for name in bare:
        index, shown = _bare_field(lines, name)
        fix = f'so geht es: {{{{ {name} | default("du") }}}}'
        if missing[name]:
            error(f"{{{{ {name} }}}} hat keinen Ersatz, und {missing[name]} von {count} Abonnent:innen "
                  f"{_have(missing[name])} {FIELD_WORDS[name]}: dort stünde „{shown}“; {fix}", issue.where(index))
        elif issue.archive:
            warn(f"{{{{ {name} }}}} hat keinen Ersatz: auf der Seite im Web-Archiv steht dort „{shown}“; {fix}",
                 issue.where(index))
    if titles:
        found = ", ".join(f"„{title}“ {count}×" for title, count in titles.most_common())
        index = next(i for i, line in enumerate(lines) if "first_name" in line)
        count = sum(titles.values())
        warn(f"{count} Abonnent:innen {_have(count)} einen Titel vor dem Namen ({found}); "
             "{{ first_name }} lässt ihn weg und nimmt den Vornamen danach. Steht nach dem Titel nur ein Name "
             "(„Frau Meier“), gilt er als Nachname, und es greift der Ersatz aus default(…)", issue.where(index))


def _have(count: int) -> str:
    return "hat" if count == 1 else "haben"


def _bare_field(lines: list[str], name: str) -> tuple[int, str]:
    """The first line with this field and no default, and how that spot reads when the value is empty."""
    for index, line in enumerate(lines):
        for match in ANY_FIELD.finditer(line):
            parsed = FIELD.fullmatch(match.group(1))
            if parsed and parsed.group("name") == name and parsed.group("dq") is parsed.group("sq") is \
                    parsed.group("gq") is None:
                before = line[:match.start()][-30:].lstrip()
                after = ANY_FIELD.sub("…", line[match.end():])[:30].rstrip()
                return index, " ".join(f"{before}{after}".split())
    return 0, ""


def _text_findings(issue: Issue, body: str, language: str) -> list[tuple[int, str]]:
    """Signs of pasted text: line breaks that Markdown joins, plain-line headings, text swallowed by
    a list, a wall of text, addresses in square brackets. (body line, message), body lines 0-based."""
    raw = issue.body.split("\n")
    lines = body.split("\n")
    findings: list[tuple[int, str]] = []
    paragraphs: list[tuple[int, int, bool]] = []  # start, end, inside a list item
    containers: list[str] = []
    code: set[int] = set()
    for token in markdown(language).parse(body):
        if token.nesting == 1 and token.type != "paragraph_open":
            containers.append(token.type)
        elif token.nesting == -1 and token.type != "paragraph_close":
            containers.pop()
        elif token.type == "paragraph_open" and token.map and "blockquote_open" not in containers:
            paragraphs.append((token.map[0], token.map[1], "list_item_open" in containers))
        elif token.type in ("fence", "code_block", "html_block") and token.map:
            code.update(range(*token.map))
    last_text = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    words = [len(" ".join(lines[start:end]).split()) for start, end, _ in paragraphs]
    for number, (start, end, in_list) in enumerate(paragraphs):
        block = lines[start:end]
        if in_list:  # a list item's own lines are indented; a new paragraph that is not was swallowed
            lazy = next((i for i in range(1, len(block)) if not block[i][:1].isspace() and (
                (prose.ends_sentence(block[i - 1]) and prose.starts_sentence(block[i]))
                or prose.looks_like_heading(block[i]))), None)
            if lazy is None:
                continue
            findings.append((start + lazy, f"„{_snippet(raw[start + lazy])}“ steht direkt unter einem "
                                           "Listenpunkt und wird ein Teil von ihm; soll hier ein neuer Absatz "
                                           "beginnen, davor eine Leerzeile setzen"))
            start, block = start + lazy, block[lazy:]
        if prose.reads_as_separate_paragraphs(block):
            findings.append((start, f"{len(block)} Zeilen ohne Leerzeile dazwischen (Zeilen {issue.body_line + start}"
                                    f"–{issue.body_line + start + len(block) - 1}) werden im Mail ein einziger "
                                    "Absatz. Für getrennte Absätze eine Leerzeile dazwischen setzen, für einen "
                                    "Zeilenumbruch im Absatz ein \\ ans Zeilenende; einen eingefügten Text "
                                    "bereitet `newsletter new --from DATEI` auf"))
        width = max(len(line.rstrip()) for line in block)
        for offset, line in enumerate(block):
            previous = block[offset - 1] if offset else _line_before(lines, start)
            following = block[offset + 1] if offset + 1 < len(block) else _line_after(lines, end, last_text)
            same_block = offset + 1 < len(block)
            if prose.heading_between(previous, line, following, width if same_block else None):
                findings.append((start + offset, f"„{line.strip()}“ steht allein und ohne Satzzeichen am Ende: "
                                                 f"als Überschrift `## {line.strip()}`?"))
        others = words[:number] + words[number + 1:]
        typical = statistics.median(others) if others else 0
        if words[number] >= max(LONG_PARAGRAPH_WORDS, 3 * typical):
            compared = f", die anderen im Mittel {typical:.0f}" if others else ""
            findings.append((start, f"ein Absatz mit {words[number]} Wörtern{compared}: auf dem Handy eine "
                                    "lange Textwand. An einem Gedankenwechsel mit einer Leerzeile teilen"))
    for index, line in enumerate(raw):
        if index in code:
            continue
        for match in prose.BRACKETED.finditer(line):
            findings.append((index, f"„{match.group(0)}“ erscheint so mit eckigen Klammern im Mail und ist kein "
                                    f"Link; als Link: {prose.bracket_as_link(match)}"))
    return findings


def _line_before(lines: list[str], start: int) -> str | None:
    return lines[start - 1] if start else None


def _line_after(lines: list[str], end: int, last_text: int) -> str | None:
    """The next line with text after a block, or None at the end of the issue."""
    return next((lines[i] for i in range(end, last_text + 1) if lines[i].strip()), None)


def _snippet(line: str, length: int = 40) -> str:
    text = line.strip()
    return text if len(text) <= length else text[:length].rsplit(" ", 1)[0] + " …"
