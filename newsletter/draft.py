"""`newsletter new --from FILE`: an issue drafted from pasted text (a blog post, a Word document saved as text).

Such text has one paragraph per line, headings as plain lines and "- " lists directly
followed by text. Markdown would join all of it into one paragraph, so the draft gets blank
lines between paragraphs, `## ` before lines that read as headings, a blank line after each
list, and links for addresses in square brackets. Every change is reported, so the author can
check it; a hard-wrapped paragraph of a Markdown file stays as it is.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

from newsletter import prose
from newsletter.errors import IssueError
from newsletter.issue import draft_issue, parse_issue
from newsletter.workspace import Workspace

BULLET = re.compile(r"^\s*(?:[-*+•◦▪·–—]|o(?=\t))\s+(?=\S)")
NUMBER = re.compile(r"^\s*(\d{1,3})[.)]\s+(?=\S)")
FENCE_LINE = re.compile(r"^\s*(```|~~~)")
GENDER_STAR = re.compile(r"(?<=\w)\*(?=\w)")  # Partner*innen: Markdown would read the stars as italics
CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
BINARY_FORMATS = {
    b"PK\x03\x04": "eine Word- oder OpenOffice-Datei (.docx, .odt)",
    b"%PDF": "eine PDF-Datei",
    b"{\\rtf": "eine RTF-Datei",
    b"\xd0\xcf\x11\xe0": "eine alte Word-Datei (.doc)",
}


@dataclass
class PastedText:
    text: str
    encoding: str
    markdown: bool  # a .md file: its Markdown is meant, stars and hashes stay


@dataclass
class Draft:
    path: Path
    source: Path
    encoding: str
    changes: list[tuple[int, str]] = field(default_factory=list)  # (line in the issue file, what changed)
    paragraphs_split: int = 0


def read_pasted(path: Path) -> PastedText:
    """Read a text file as Word, an editor or a browser saves it: UTF-8, UTF-16 or Windows-1252."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise IssueError(f"{path}: Datei nicht gefunden") from None
    except IsADirectoryError:
        raise IssueError(f"{path}: ist ein Ordner, keine Textdatei") from None
    except OSError as exc:
        raise IssueError(f"{path}: kann nicht gelesen werden ({exc.strerror})") from None
    for magic, kind in BINARY_FORMATS.items():
        if raw.startswith(magic):
            raise IssueError(f"{path}: ist {kind}, kein reiner Text. In Word: „Datei → Speichern unter“ und "
                             "als Dateityp „Nur Text (.txt)“ wählen, oder den Text kopieren und in eine .txt-Datei "
                             "einfügen; diese Datei dann mit --from angeben")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        text, encoding = raw.decode("utf-16"), "UTF-16"
    else:
        try:
            text, encoding = raw.decode("utf-8-sig"), "UTF-8"
        except UnicodeDecodeError:
            text, encoding = raw.decode("cp1252", errors="replace"), "Windows-1252"
    return PastedText(text, encoding, path.suffix.lower() in (".md", ".markdown"))


def markdown_from_pasted(pasted: PastedText) -> tuple[list[str], list[tuple[int, str]], int]:
    """The text as Markdown lines, what changed (0-based output line, message), paragraphs split apart."""
    lines = _clean_lines(pasted)
    out: list[str] = []
    changes: list[tuple[int, str]] = []
    split = 0
    in_fence = False
    index = 0

    def blank() -> None:
        if out and out[-1] != "":
            out.append("")

    while index < len(lines):
        line = lines[index]
        if FENCE_LINE.match(line) or in_fence:  # code stays exactly as written
            in_fence = in_fence != bool(FENCE_LINE.match(line))
            out.append(line)
            index += 1
            continue
        if not line.strip():
            blank()
            index += 1
            continue
        if BULLET.match(line) or NUMBER.match(line):
            blank()
            while index < len(lines) and (BULLET.match(lines[index]) or NUMBER.match(lines[index])
                                          or (lines[index][:1].isspace() and lines[index].strip())):
                out.append(_list_item(lines[index]))
                index += 1
            blank()
            if index < len(lines) and lines[index].strip():
                changes.append((len(out), "Leerzeile davor: dieser Text gehört nicht mehr zum letzten Listenpunkt"))
            continue
        mark = line.lstrip()[:1]
        if mark == "#" or (pasted.markdown and mark in ">|"):  # Markdown's own heading, quote or table
            if not (out and out[-1].lstrip()[:1] == mark != "#"):
                blank()
            out.append(line)
            index += 1
            if mark == "#":
                blank()
            continue
        run = []
        while index < len(lines) and lines[index].strip() and not (
                BULLET.match(lines[index]) or NUMBER.match(lines[index]) or FENCE_LINE.match(lines[index])
                or lines[index].lstrip().startswith("#")):
            run.append(lines[index])
            index += 1
        following = next((text for text in lines[index:] if text.strip()), None)
        previous = next((text for text in reversed(out) if text.strip()), None)
        if len(run) > 1 and not prose.reads_as_separate_paragraphs(run, at_least=1):
            blank()
            out.extend(run)  # a hard-wrapped paragraph: one paragraph already
            blank()
            continue
        width = max(len(text.rstrip()) for text in run)
        for offset, text in enumerate(run):
            before = run[offset - 1] if offset else (None if out and out[-1] == "" else previous)
            after = run[offset + 1] if offset + 1 < len(run) else following
            blank()
            if prose.heading_between(before, text, after, width if offset + 1 < len(run) else None):
                out.append(f"## {text.strip()}")
                changes.append((len(out) - 1, f"Überschrift: ## {text.strip()}"))
            else:
                out.append(text)
        split += len(run) - 1
        blank()
    while out and out[-1] == "":
        out.pop()
    stars = sum(line.count("\\*") for line in out) if not pasted.markdown else 0
    if stars:
        first = next(i for i, line in enumerate(out) if "\\*" in line)
        changes.append((first, f"{stars} Gendersternchen als \\* geschrieben, damit Markdown sie nicht "
                               "als kursiv liest"))
    for number, text in enumerate(out):
        if text.startswith(("    ", "\t")) or FENCE_LINE.match(text):
            continue
        linked = prose.BRACKETED.sub(prose.bracket_as_link, text)
        if linked != text:
            for match in prose.BRACKETED.finditer(text):
                changes.append((number, f"{match.group(0)} als Link: {prose.bracket_as_link(match)}"))
            out[number] = linked
    return out, sorted(changes), split


def _clean_lines(pasted: PastedText) -> list[str]:
    """Unix line ends, Word's manual line and page breaks as new lines, no control characters,
    no trailing spaces; in plain text, gender stars stay stars (not italics)."""
    text = pasted.text.replace("\r\n", "\n").replace("\r", "\n").replace("\x0b", "\n").replace("\f", "\n")
    text = CONTROL.sub("", text.replace("\u2028", "\n").replace("\u2029", "\n"))
    lines = [line.rstrip() for line in text.split("\n")]
    if not pasted.markdown:
        lines = [GENDER_STAR.sub(r"\\*", line) for line in lines]
    return lines


def _list_item(line: str) -> str:
    if line[:1].isspace() and not (BULLET.match(line) or NUMBER.match(line)):
        return line  # a list item's own continuation, indented
    if match := NUMBER.match(line):
        return f"{match.group(1)}. {line[match.end():].strip()}"
    match = BULLET.match(line)
    assert match is not None
    return f"- {line[match.end():].strip()}"


def title_from(pasted: PastedText, source: Path) -> str:
    """The first line if it reads as a heading, else the file's name."""
    first = next((line.strip() for line in _clean_lines(pasted) if line.strip()), "")
    first = first.lstrip("#").strip()
    if first and prose.looks_like_heading(first):
        return first
    return source.stem.replace("_", " ").replace("-", " ").strip() or "Neue Ausgabe"


def draft_from_file(workspace: Workspace, source: Path, title: str | None = None, month: str | None = None,
                    today: dt.date | None = None) -> Draft:
    """Create issues/YYYY-MM-slug.md from a text file; never overwrite."""
    pasted = read_pasted(source)
    body, changes, split = markdown_from_pasted(pasted)
    if not any(line.strip() for line in body):
        raise IssueError(f"{source}: enthält keinen Text")
    path = draft_issue(workspace, title or title_from(pasted, source), month, today, body="\n".join(body) + "\n")
    first = parse_issue(path).body_line
    return Draft(path, source, pasted.encoding, [(first + line, what) for line, what in changes], split)
