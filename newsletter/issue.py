"""An issue: a Markdown file with TOML front matter between +++ lines; parsing and drafting."""

from __future__ import annotations

import datetime as dt
import re
import tomllib
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from newsletter.config import toml_error_text
from newsletter.errors import IssueError
from newsletter.workspace import Workspace

FENCE = "+++"
FRONT_MATTER_KEYS: dict[str, type | tuple[type, ...]] = {
    "subject": str,
    "preheader": str,
    "date": (dt.date, str),
    "button_text": str,
    "button_url": str,
    "archive": bool,
}


@dataclass(frozen=True)
class Issue:
    path: Path
    subject: str
    preheader: str
    date: dt.date
    body: str
    body_line: int  # line number of the body's first line in the file, for error messages
    button_text: str = ""
    button_url: str = ""
    archive: bool = True

    @property
    def slug(self) -> str:
        return self.path.stem

    def where(self, body_line_index: int = 0) -> str:
        """"file:line" for a line of the body (0-based), as error messages show it."""
        return f"{self.path}:{self.body_line + body_line_index}"


def parse_issue(path: Path) -> Issue:
    """Read an issue file; a broken front matter gives an IssueError naming the line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise IssueError(f"{path}: Datei nicht gefunden") from None
    except UnicodeDecodeError:
        raise IssueError(f"{path}: ist kein UTF-8-Text (bitte als UTF-8 speichern)") from None
    except OSError as exc:
        raise IssueError(f"{path}: kann nicht gelesen werden ({exc.strerror})") from None
    text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if not lines or lines[0].strip() != FENCE:
        raise IssueError(f"{path}:1: die Datei muss mit einer Zeile „+++“ beginnen "
                         "(Kopfbereich mit subject, preheader, date)")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == FENCE)
    except StopIteration:
        raise IssueError(f"{path}:1: der Kopfbereich wird nicht mit „+++“ geschlossen") from None
    try:
        meta = tomllib.loads("\n".join(lines[1:end]))
    except tomllib.TOMLDecodeError as exc:
        raise IssueError(f"{path}: {toml_error_text(exc, line_offset=1, source=chr(10).join(lines[1:end]))}") from None
    _check_meta(path, meta, lines[1:end])
    date = meta.get("date", dt.date.today())
    if isinstance(date, str):
        date = _date_from_text(path, date)
    if isinstance(date, dt.datetime):
        date = date.date()
    return Issue(
        path=path,
        subject=meta.get("subject", "").strip(),
        preheader=meta.get("preheader", "").strip(),
        date=date,
        body="\n".join(lines[end + 1:]).strip("\n") + "\n",
        body_line=end + 2 + _leading_blank_lines(lines[end + 1:]),
        button_text=meta.get("button_text", "").strip(),
        button_url=meta.get("button_url", "").strip(),
        archive=meta.get("archive", True),
    )


def _date_from_text(path: Path, text: str) -> dt.date:
    """A date written as text: "2026-12-01", or the German "1.12.2026" (also "01.12.26")."""
    try:
        if match := re.fullmatch(r"\s*(\d{1,2})\.(\d{1,2})\.(\d{4}|\d{2})\s*", text):
            day, month, year = (int(part) for part in match.groups())
            return dt.date(year + 2000 if year < 100 else year, month, day)
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise IssueError(f'{path}: date = "{text}" ist kein Datum wie 2026-12-01') from None


def _leading_blank_lines(lines: list[str]) -> int:
    count = 0
    for line in lines:
        if line.strip():
            break
        count += 1
    return count


def _check_meta(path: Path, meta: dict[str, Any], lines: list[str]) -> None:
    def line_of(key: str) -> int:
        for number, line in enumerate(lines, start=2):
            if re.match(rf"\s*{re.escape(key)}\s*=", line):
                return number
        return 1

    for key, value in meta.items():
        if key not in FRONT_MATTER_KEYS:
            known = ", ".join(FRONT_MATTER_KEYS)
            raise IssueError(f"{path}:{line_of(key)}: unbekannter Eintrag „{key}“ im Kopfbereich (bekannt: {known})")
        expected = FRONT_MATTER_KEYS[key]
        if not isinstance(value, expected):
            raise IssueError(f"{path}:{line_of(key)}: {key} hat den falschen Typ ({type(value).__name__})")


_GERMAN = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ä": "ae", "Ö": "oe", "Ü": "ue"})


def slugify(title: str, max_length: int = 60) -> str:
    """A file-name slug: German umlauts spelled out, other accents dropped, words joined by "-"."""
    text = unicodedata.normalize("NFKD", title.translate(_GERMAN))
    text = text.encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    if len(slug) > max_length:
        slug = slug[:max_length].rsplit("-", 1)[0]
    return slug


def draft_issue(workspace: Workspace, title: str, month: str | None = None,
                today: dt.date | None = None, body: str | None = None) -> Path:
    """Create issues/YYYY-MM-slug.md from templates/issue.md; never overwrite.

    With `body`, only the template's front matter is used and the body is the given text.
    """
    today = today or dt.date.today()
    if month is None:
        date = today
    else:
        if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
            raise IssueError(f"--month {month}: erwartet JJJJ-MM, z. B. 2026-12")
        year, number = (int(part) for part in month.split("-"))
        date = today if (today.year, today.month) == (year, number) else dt.date(year, number, 1)
    slug = slugify(title)
    if not slug:
        raise IssueError(f"„{title}“: aus diesem Titel lässt sich kein Dateiname bilden")
    path = workspace.issues_dir / f"{date:%Y-%m}-{slug}.md"
    source = workspace.template_source("issue.md")
    if body is not None:
        source = source[:_front_matter_end(source)]
    template = workspace.templates.from_string(source)
    text = template.render(title=title, date=date.isoformat(), subject=_toml_string(title))
    if body is not None:
        text = text.rstrip("\n") + "\n\n" + body
    workspace.issues_dir.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise IssueError(f"{path}: gibt es schon; ich überschreibe nichts") from None
    return path


def _front_matter_end(source: str) -> int:
    """Where the template's front matter ends: after its closing +++ line."""
    lines = source.split("\n")
    if lines and lines[0].strip() == FENCE:
        for index in range(1, len(lines)):
            if lines[index].strip() == FENCE:
                return len("\n".join(lines[:index + 1]))
    raise IssueError("templates/issue.md: die Vorlage beginnt nicht mit einem Kopfbereich zwischen „+++“-Zeilen")


def _toml_string(value: str) -> str:
    """A TOML basic string with quotes and backslashes escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
