"""The public archive: a static website of the issues that went out, with an index and an Atom feed.

Only what reached readers is in it: an issue enters the index and the feed once its journal
holds a message that was sent, ordered by when its first message went out. The page of an
issue whose send is running exists already, because every mail links to it, but it is listed
only after its first message is out, and it is gone again if the run ends without one.

Plain files with relative links, so it can be uploaded anywhere or served by `newsletter serve`.
Pages carry no personal data: merge fields show their fallbacks, and there is no unsubscribe
token, only an invitation to subscribe. The output is deterministic, so an unchanged archive
builds to identical bytes and an upload only syncs what changed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from newsletter import __version__
from newsletter.errors import NewsletterError
from newsletter.issue import Issue, parse_issue
from newsletter.journal import SendJournal
from newsletter.merge import recipient_values
from newsletter.render import render_issue, with_typography
from newsletter.texts import texts
from newsletter.workspace import Workspace

MANIFEST = ".archive-files"
INPUTS = ".archive-inputs"  # what each page was rendered from, so unchanged pages are not rendered again
ATOM = "http://www.w3.org/2005/Atom"
MONTHS = {
    "de": ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September",
           "Oktober", "November", "Dezember"],
    "en": ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"],
}
PAGE_TEXTS = {
    "de": {"all_issues": "← Alle Ausgaben", "signup_hint": "Dir gefällt diese Ausgabe?",
           "signup": "Newsletter abonnieren", "archive": "Archiv", "feed": "Feed abonnieren",
           "intro": "Alle bisherigen Ausgaben zum Nachlesen."},
    "en": {"all_issues": "← All issues", "signup_hint": "Did you like this issue?",
           "signup": "Subscribe to the newsletter", "archive": "Archive", "feed": "Subscribe to the feed",
           "intro": "All past issues to read again."},
}


@dataclass
class ArchiveResult:
    folder: Path
    issues: list[Issue]  # the listed ones: they reached readers
    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class ArchivedIssue:
    issue: Issue
    sent_at: str | None  # its first message, as the journal has it; None: being sent, nothing out yet


def archived_issues(workspace: Workspace) -> list[ArchivedIssue]:
    """Issues that may be archived and reached readers, newest first message first; then any
    whose send is running but has not delivered yet (a page, but not listed)."""
    found = []
    for path in sorted(workspace.journal_dir.glob("*.sqlite")):
        issue_path = workspace.issues_dir / f"{path.stem}.md"
        if not issue_path.is_file():
            continue
        journal = SendJournal(path)
        try:
            sent_at = journal.first_sent_at()
            if sent_at is None and not journal.is_running():
                continue
        finally:
            journal.close()
        issue = parse_issue(issue_path)
        if issue.archive:
            found.append(ArchivedIssue(issue, sent_at))
    return sorted(found, key=lambda item: (item.sent_at or "", item.issue.date, item.issue.slug), reverse=True)


def page_url(workspace: Workspace, issue: Issue) -> str:
    config = workspace.config
    return f"{config.base_url}{config.newsletter.archive_path}{issue.slug}.html"


def build_archive(workspace: Workspace, folder: Path | None = None) -> ArchiveResult:
    """Write one page per sent issue, index.html and feed.xml into the archive folder."""
    config = workspace.config
    if not config.base_url:
        raise NewsletterError(f"{config.path}: [newsletter] base_url fehlt; ohne sie hat das Archiv keine Adresse")
    folder = folder or workspace.state_dir / "archive"
    language = config.newsletter.language
    words = PAGE_TEXTS[language]
    archived = [ArchivedIssue(with_typography(item.issue, language), item.sent_at)
                for item in archived_issues(workspace)]
    listed = [item for item in archived if item.sent_at is not None]
    issues = [item.issue for item in listed]
    page = {**words, "index_url": "index.html", "signup_url": f"{config.base_url}/subscribe"}
    files: dict[str, bytes] = {}
    previous = _read_inputs(folder)
    inputs: dict[str, str] = {}
    for issue in (item.issue for item in archived):
        name = f"{issue.slug}.html"
        inputs[name] = _page_inputs(workspace, issue)
        existing = folder / name
        if previous.get(name) == inputs[name] and existing.is_file():
            files[name] = existing.read_bytes()  # same inputs, same bytes: skip the slow render
            continue
        rendered = render_issue(workspace, issue, page=page)
        html, _ = rendered.personalize(recipient_values("", ""))
        files[name] = html.encode("utf-8")
    index = workspace.templates.get_template("archive/index.html").render(
        newsletter=config.newsletter, t={**texts(language), **words}, language=language,
        signup_url=page["signup_url"], imprint=config.imprint,
        months=_by_month(issues, language))
    files["index.html"] = index.encode("utf-8")
    files["feed.xml"] = atom_feed(workspace, listed)
    result = _write(folder, files, issues)
    _write_inputs(folder, inputs)
    return result


def _page_inputs(workspace: Workspace, issue: Issue) -> str:
    """A fingerprint of everything a page is rendered from: issue, config, templates, tool version."""
    digest = hashlib.sha256(__version__.encode())
    digest.update(issue.path.read_bytes())
    digest.update(workspace.config.path.read_bytes())
    digest.update(workspace.template_source("newsletter.mjml").encode())
    return digest.hexdigest()


def _read_inputs(folder: Path) -> dict[str, str]:
    try:
        data = json.loads((folder / INPUTS).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_inputs(folder: Path, inputs: dict[str, str]) -> None:
    data = json.dumps(inputs, indent=1, sort_keys=True).encode()
    if (folder / INPUTS).is_file() and (folder / INPUTS).read_bytes() == data:
        return
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, folder / INPUTS)


def _by_month(issues: list[Issue], language: str) -> list[tuple[str, list[Issue]]]:
    months: dict[str, list[Issue]] = {}
    for issue in issues:
        months.setdefault(f"{MONTHS[language][issue.date.month - 1]} {issue.date.year}", []).append(issue)
    return list(months.items())


def atom_feed(workspace: Workspace, listed: list[ArchivedIssue]) -> bytes:
    """An Atom 1.0 feed of the archive, dated by each issue's first message: from the journals,
    never from the clock, so a rebuild gives the same bytes."""
    config = workspace.config
    nl = config.newsletter
    home = f"{config.base_url}{nl.archive_path}"
    ET.register_namespace("", ATOM)
    feed = ET.Element(f"{{{ATOM}}}feed", {"xml:lang": nl.language})

    def add(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        element = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
        element.text = text
        return element

    add(feed, "id", home)
    add(feed, "title", nl.name)
    add(feed, "updated", _timestamp(listed[0].sent_at) if listed else "1970-01-01T00:00:00Z")
    author = add(feed, "author")
    add(author, "name", nl.from_name or nl.name)
    add(feed, "link", rel="self", href=f"{home}feed.xml", type="application/atom+xml")
    add(feed, "link", rel="alternate", href=f"{home}index.html", type="text/html")
    for item in listed:
        issue = item.issue
        entry = add(feed, "entry")
        url = page_url(workspace, issue)
        add(entry, "id", url)
        add(entry, "title", issue.subject)
        add(entry, "updated", _timestamp(item.sent_at))
        add(entry, "published", _timestamp(item.sent_at))
        add(entry, "link", rel="alternate", href=url, type="text/html")
        if issue.preheader:
            add(entry, "summary", issue.preheader)
    ET.indent(feed)
    body = ET.tostring(feed, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + body + b"\n"


def _timestamp(sent_at: str | None) -> str:
    """A journal's UTC time as RFC 3339 with Z, as Atom has it."""
    moment = dt.datetime.fromisoformat(sent_at or "1970-01-01T00:00:00+00:00").astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _write(folder: Path, files: dict[str, bytes], issues: list[Issue]) -> ArchiveResult:
    """Write only what changed (atomically); remove pages this archive wrote before but no longer has."""
    folder.mkdir(parents=True, exist_ok=True)
    result = ArchiveResult(folder, issues)
    manifest = folder / MANIFEST
    previous = set(manifest.read_text(encoding="utf-8").split()) if manifest.exists() else set()
    for name in sorted(previous - set(files)):
        target = folder / name
        if target.parent == folder and target.exists():
            target.unlink()
            result.removed.append(target)
    for name, data in {**files, MANIFEST: "\n".join(sorted(files)).encode() + b"\n"}.items():
        target = folder / name
        if target.exists() and target.read_bytes() == data:
            if name != MANIFEST:
                result.unchanged.append(target)
            continue
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # noqa: PTH101 - public web files
        os.replace(tmp, target)
        if name != MANIFEST:
            result.written.append(target)
    return result
