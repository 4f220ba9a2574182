"""Render an issue once: Markdown → MJML template → HTML with inlined CSS, plus a plain-text part.

The output still holds slot tokens for merge fields and the unsubscribe link; `personalize`
fills them per recipient without rendering again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import logging
import os
import re
import textwrap
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import jinja2
import markupsafe

from newsletter.config import Config
from newsletter.errors import IssueError
from newsletter.issue import Issue
from newsletter.merge import UNSUBSCRIBE, UNSUBSCRIBE_SUBJECT, FieldProblem, Slot, SlotTable, fill, split_slots
from newsletter.texts import texts
from newsletter.workspace import Workspace

QUOTES = {"de": "„“‚‘", "en": "“”‘’"}
TEXT_WIDTH = 72
DOCTYPE = "<!doctype html>"
# The text column of templates/newsletter.mjml: 600 px wide, 32 px padding on either side.
COLUMN_WIDTH = 536


if TYPE_CHECKING:  # markdown-it, mjml and premailer load when an issue is rendered, not for --help
    from markdown_it import MarkdownIt
    from markdown_it.tree import SyntaxTreeNode


def markdown(language: str) -> MarkdownIt:
    """CommonMark with tables, strikethrough and the language's typographic quotes and dashes."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"typographer": True, "quotes": QUOTES[language]})
    return md.enable(["table", "strikethrough", "replacements", "smartquotes"])


@dataclass(frozen=True)
class RenderedIssue:
    """One issue rendered for everybody; slot tokens stand where each person's values go."""

    issue: Issue
    config: Config
    html: str
    text: str
    slots: list[Slot]
    links: list[str] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)  # (src, alt)
    web_url: str = ""

    @cached_property
    def html_pieces(self) -> list[str | int]:
        return split_slots(self.html)

    @cached_property
    def text_pieces(self) -> list[str | int]:
        return split_slots(self.text)

    def personalize(self, values: dict[str, str]) -> tuple[str, str]:
        """This person's HTML and plain text."""
        return (fill(self.html_pieces, self.slots, values, escape=True),
                fill(self.text_pieces, self.slots, values, escape=False))


def protect_fields(issue: Issue) -> tuple[SlotTable, str, list[FieldProblem]]:
    """Swap the body's merge fields for slot tokens; the unsubscribe slot is always slot 0."""
    table = SlotTable()
    table.token(Slot(UNSUBSCRIBE))
    body, problems = table.protect(issue.body)
    return table, body, problems


def typographic(text: str, language: str) -> str:
    """Straight quotes and -- in subject and preheader as the body gets them: „…“ and –."""
    opening, closing = QUOTES[language][0], QUOTES[language][1]
    text = re.sub(r'"([^"\n]+)"', rf"{opening}\1{closing}", text)
    return re.sub(r"(?<=\s)--(?=\s)", "–", text)


def with_typography(issue: Issue, language: str) -> Issue:
    return dataclasses.replace(issue, subject=typographic(issue.subject, language),
                               preheader=typographic(issue.preheader, language))


def render_issue(workspace: Workspace, issue: Issue, page: dict[str, str] | None = None) -> RenderedIssue:
    """Render the issue's HTML and text once; unknown merge fields are an IssueError.

    `page` renders the public web version instead (the archive): no unsubscribe link and no
    "view in browser" link, but a way back to all issues and a sign-up invitation.
    """
    config = workspace.config
    issue = with_typography(issue, config.newsletter.language)
    table, body, problems = protect_fields(issue)
    if problems:
        first = problems[0]
        raise IssueError(f"{issue.where(first.line)}: {first.message}")
    unsubscribe = table.token(Slot(UNSUBSCRIBE))
    by_mail = table.token(Slot(UNSUBSCRIBE_SUBJECT))
    md = markdown(config.newsletter.language)
    tokens = md.parse(body)
    from markdown_it.tree import SyntaxTreeNode

    tree = SyntaxTreeNode(tokens)
    web_url = "" if page else archive_url(config, issue)
    context = {**template_context(config, issue, unsubscribe, web_url), "page": page}
    body_html = md.renderer.render(tokens, md.options, {})
    # The author's own Markdown, rendered by markdown-it: trusted like the template itself.
    html = mjml_to_html(workspace, {**context, "body_html": markupsafe.Markup(body_html)},  # noqa: S704
                        inline=page is None)
    plain = PlainText(config.newsletter.language)
    body_text = plain.render(tree)
    text = workspace.templates.get_template("newsletter.txt").render(
        **context, body_text=body_text, links=plain.links, unsubscribe_subject=by_mail)
    return RenderedIssue(
        issue=issue, config=config, html=html, text=text, slots=table.slots,
        links=_unique([*plain.links, *( [issue.button_url] if issue.button_url else [])]),
        images=plain.images, web_url=web_url,
    )


def archive_url(config: Config, issue: Issue) -> str:
    """The issue's public web page, or "" when it is not archived or no base_url is set."""
    if not issue.archive or not config.base_url:
        return ""
    return f"{config.base_url}{config.newsletter.archive_path}{issue.slug}.html"


def template_context(config: Config, issue: Issue, unsubscribe_url: str, web_url: str) -> dict:
    nl = config.newsletter
    words = texts(nl.language)
    site = urlsplit(nl.website).hostname if nl.website else ""
    why = nl.why or (words["why_site"].format(site=site) if site else words["why"])
    return {
        "newsletter": nl, "imprint": config.imprint, "issue": issue, "t": words,
        "subject": issue.subject, "preheader": issue.preheader, "why": why,
        "unsubscribe_url": unsubscribe_url, "web_url": web_url, "language": nl.language, "mail": False,
    }


def mjml_to_html(workspace: Workspace, context: dict, inline: bool = True,
                 template: jinja2.Template | None = None) -> str:
    """Jinja2 → MJML → HTML, then premailer inlines the CSS the way email clients need it.

    A web page (inline=False) keeps its <style> block as it is: browsers need no inlining.
    """
    template = template or workspace.templates.get_template("newsletter.mjml")
    mjml_source = template.render(**context)
    try:
        from mjml import mjml2html

        html = mjml2html(mjml_source, fonts={})
    except Exception as exc:  # noqa: BLE001 - mjml-python raises plain exceptions
        raise IssueError(f"templates/newsletter.mjml: MJML-Fehler: {exc}") from None
    return sized_images(remembered_inline_css(workspace.cache_dir, html) if inline else html)


IMG_TAG = re.compile(r"<img\b[^>]*>", re.I)
NUMBER_ATTR = r'\s{name}="?(\d+)(?:px)?"?(?=[\s/>])'


def sized_images(html: str) -> str:
    """Every <img> gets a numeric width: its own if the author gave a smaller one, else the column.

    Outlook for Windows ignores CSS sizes and shows a photo at its full pixel width; it needs
    the width attribute. A height only stays when the width stayed (else the photo distorts),
    and premailer's height="auto" (not a number, so invalid) goes. Without a width of her own,
    an image gets the column's, so a small one (a logo) wants `<img … width="120">`.
    """
    def fix(match: re.Match[str]) -> str:
        tag = match.group(0)
        own = re.search(NUMBER_ATTR.format(name="width"), tag, re.I)
        styled = re.search(r"[\s;\"']width\s*:\s*(\d+)px", tag, re.I)
        width = min([COLUMN_WIDTH, *(int(m.group(1)) for m in (own, styled) if m)])
        keep_height = own is not None and int(own.group(1)) == width
        tag = re.sub(r'\s(?:width|height)="[^"]*"', "", tag, flags=re.I) if not keep_height \
            else re.sub(r'\s(?:width="[^"]*"|height="(?!\d+")[^"]*")', "", tag, flags=re.I)
        return re.sub(r"\s*/?>$", lambda end: f' width="{width}"{end.group(0)}', tag, count=1)

    # premailer turns CSS "auto" into attributes too (on the button's table): not a size at all
    return re.sub(r'(<[a-z]+\b[^>]*?)\s(?:width|height)="auto"', r"\1", IMG_TAG.sub(fix, html))


INLINED_KEPT = 16  # inlined versions remembered; older ones go


def remembered_inline_css(cache_dir: Path, html: str) -> str:
    """`inline_css`, remembered by what goes in: preview, check, test copy and send of one issue
    inline the same HTML, and premailer (with cssutils and requests, which it imports) costs
    0.3–0.5 s each time. The key covers the HTML and the files of the code that inlines it
    (this module, premailer, cssutils, cssselect, lxml), so an edit or an upgrade inlines anew.
    Each file starts with the SHA-256 of what follows, so a file a crash cut short is never
    used; a cache that cannot be read or written is no error: the CSS is inlined as without it."""
    key = hashlib.sha256(html.encode("utf-8"))
    for name in ("premailer", "cssutils", "cssselect", "lxml"):
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
        key.update(f"{name}:{_file_identity(origin)};".encode())
    key.update(f"{__name__}:{_file_identity(__file__)}".encode())
    path = cache_dir / f"inlined-{key.hexdigest()}.html"
    with contextlib.suppress(OSError, UnicodeDecodeError):
        check, _, kept = path.read_bytes().partition(b"\n")
        if check.decode("ascii") == hashlib.sha256(kept).hexdigest():
            return kept.decode("utf-8")
    inlined = inline_css(html)
    with contextlib.suppress(OSError):
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")  # `serve` has threads
        data = inlined.encode("utf-8")
        partial.write_bytes(hashlib.sha256(data).hexdigest().encode("ascii") + b"\n" + data)
        os.replace(partial, path)  # whole or not at all: another command may be reading it
        finished = sorted(cache_dir.glob("inlined-*.html"), key=lambda entry: entry.stat().st_mtime)
        abandoned = [entry for entry in cache_dir.glob(".inlined-*")  # what a crash left half-written,
                     if entry.stat().st_mtime < time.time() - 600]   # not what another one is writing now
        for old in finished[:-INLINED_KEPT] + abandoned:
            old.unlink(missing_ok=True)
    return inlined


def _file_identity(path: str | None) -> str:
    try:
        info = Path(path).stat() if path else None
    except OSError:
        info = None
    return f"{path}:{info.st_size}:{info.st_mtime_ns}" if info else "-"


def inline_css(html: str) -> str:
    """Inline CSS with premailer: no network, @media keeps !important, doctype kept."""
    from premailer import Premailer

    _without_validation()
    inlined = Premailer(
        html,
        strip_important=False,
        keep_style_tags=True,
        allow_network=False,
        allow_loading_external_files=False,
        disable_validation=True,
        # premailer would turn CSS "height: auto" into height="auto" (no number, so invalid,
        # and over the author's own height); MJML writes the heights tables need itself.
        disable_basic_attributes=["height"],
        cssutils_logging_level=logging.CRITICAL,
    ).transform()
    # premailer drops the doctype; without it clients fall back to quirks mode.
    if not inlined.lstrip().lower().startswith("<!doctype"):
        inlined = f"{DOCTYPE}\n{inlined}"
    return inlined


def _without_validation() -> None:
    """premailer's `merge_styles` validates every element's inline style with cssutils, whatever
    `disable_validation` says (it calls `csstext_to_pairs` without passing it on). Compiling
    cssutils' validation patterns for that took 0.4 s of every send's start-up, and changes
    nothing: cssutils keeps what it cannot validate and only logs it (the HTML is byte for byte
    the same). Its module-level name is replaced once, keeping the lock it looks up there."""
    from premailer import merge_style

    original = merge_style.csstext_to_pairs
    if getattr(original, "unvalidated", False):
        return

    def unvalidated(csstext: str, validate: bool = False) -> list[tuple[str, str]]:
        return original(csstext, validate=False)

    unvalidated.unvalidated = True  # type: ignore[attr-defined]
    unvalidated._lock = original._lock  # type: ignore[attr-defined]
    merge_style.csstext_to_pairs = unvalidated


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


class PlainText:
    """Markdown syntax tree → readable plain text; links become numbered references."""

    def __init__(self, language: str) -> None:
        self.words = texts(language)
        self.links: list[str] = []
        self.images: list[tuple[str, str]] = []

    def render(self, tree: SyntaxTreeNode) -> str:
        return "\n\n".join(block for block in self._blocks(tree.children) if block).strip()

    def _blocks(self, nodes: list[SyntaxTreeNode]) -> list[str]:
        return [self._block(node) for node in nodes]

    def _block(self, node: SyntaxTreeNode) -> str:
        kind = node.type
        if kind == "paragraph":
            return _wrap(self._inline_of(node))
        if kind == "heading":
            title = self._inline_of(node)
            underline = {"h1": "=", "h2": "-"}.get(node.tag)
            return f"{title}\n{underline * min(len(title), TEXT_WIDTH)}" if underline else title
        if kind in ("bullet_list", "ordered_list"):
            start = int(node.attrs.get("start", 1))
            items = []
            for number, item in enumerate(node.children, start=start):
                marker = f"{number}. " if kind == "ordered_list" else "- "
                items.append(_indent(self.render(item), marker))
            loose = any(not child.hidden for item in node.children for child in item.children
                        if child.type == "paragraph")
            return ("\n\n" if loose else "\n").join(items)
        if kind == "blockquote":
            return "\n".join(f"> {line}".rstrip() for line in self.render(node).split("\n"))
        if kind in ("fence", "code_block"):
            return textwrap.indent(node.content.rstrip("\n"), "    ")
        if kind == "hr":
            return "* * *"
        if kind == "table":
            return self._table(node)
        if kind == "html_block":
            return _strip_tags(node.content).strip()
        return self.render(node)

    def _table(self, node: SyntaxTreeNode) -> str:
        rows = [[self._inline_of(cell) for cell in row.children]
                for section in node.children for row in section.children]
        widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(rows[0]))]
        lines = [" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
                 for row in rows]
        lines.insert(1, "-+-".join("-" * width for width in widths))
        return "\n".join(lines)

    def _inline_of(self, node: SyntaxTreeNode) -> str:
        inline = node.children[0] if node.children and node.children[0].type == "inline" else node
        return self._inline(inline.children).strip()

    def _inline(self, nodes: list[SyntaxTreeNode]) -> str:
        out = []
        for node in nodes:
            kind = node.type
            if kind == "text":
                out.append(node.content)
            elif kind == "softbreak":
                out.append(" ")
            elif kind == "hardbreak":
                out.append("\n")
            elif kind == "code_inline":
                out.append(node.content)
            elif kind == "link":
                label = self._inline(node.children)
                href = str(node.attrs.get("href", ""))
                out.append(self._link(label, href))
            elif kind == "image":
                alt = self._inline(node.children) or str(node.attrs.get("alt", ""))
                self.images.append((str(node.attrs.get("src", "")), alt))
                out.append(f"[{self.words['image']}: {alt}]" if alt else "")
            elif kind == "html_inline":
                continue
            else:
                out.append(self._inline(node.children))
        return "".join(out)

    def _link(self, label: str, href: str) -> str:
        if href.startswith("mailto:"):
            address = href.removeprefix("mailto:")
            return label if address in label else f"{label} ({address})"
        if label.strip() in (href, href.removeprefix("https://"), href.removeprefix("http://")):
            return href
        if href not in self.links:
            self.links.append(href)
        return f"{label} [{self.links.index(href) + 1}]"


def _wrap(text: str) -> str:
    return "\n".join(
        textwrap.fill(line, TEXT_WIDTH, break_long_words=False, break_on_hyphens=False)
        for line in text.split("\n")
    )


def _indent(text: str, marker: str) -> str:
    pad = " " * len(marker)
    lines = text.split("\n")
    return "\n".join([marker + lines[0], *((pad + line) if line else "" for line in lines[1:])])


def _strip_tags(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)
