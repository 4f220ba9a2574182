"""Merge fields: `{{ first_name }}` or `{{ first_name | default("du") }}` in an issue.

Fields are swapped for slot tokens before rendering, so the issue is rendered once;
each recipient's copy is then made by filling the slots (HTML-escaped in the HTML part).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass

FIELDS = ("first_name", "last_name", "name", "email")
UNSUBSCRIBE = "unsubscribe_url"  # filled by the tool, not written by the author
UNSUBSCRIBE_SUBJECT = "unsubscribe_subject"  # the same by mail: "Abmelden <token>"

# Anything between {{ and }} is meant as a merge field; the strict pattern says which are valid.
ANY_FIELD = re.compile(r"\{\{(.*?)\}\}")
FIELD = re.compile(
    r"""\s*(?P<name>[A-Za-z_]\w*)\s*
        (?:\|\s*default\(\s*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|„(?P<gq>[^“]*)“)\s*\)\s*)?""",
    re.VERBOSE,
)
SLOT = re.compile(r"NLSLOT(\d+)Q")
# What is left of {{ … }} after the valid fields are replaced, template tags, and {first_name} with one brace.
LEFTOVER = re.compile(
    r"\{\{[^}\n]{0,40}\}?|[^{}\n]{0,40}\}\}|\{%[^%\n]{0,40}%?\}?|"
    r"\{\s*(?:first_name|last_name|name|email|vorname|nachname|anrede)\s*\}",
    re.IGNORECASE)
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Words before a name that are not a first name: "Dr. Anna Meier" is Anna, "Frau Meier" has no first name.
TITLES = frozenset({"frau", "herr", "fr", "hr", "dr", "prof", "dipl", "mag", "pd", "mr", "mrs", "ms", "mx", "miss"})


@dataclass(frozen=True)
class Slot:
    field: str
    fallback: str = ""

    def value(self, values: Mapping[str, str]) -> str:
        return (values.get(self.field) or "").strip() or self.fallback


@dataclass(frozen=True)
class FieldProblem:
    line: int  # 0-based line within the scanned text
    message: str


class SlotTable:
    """Hands out one token per distinct (field, fallback) and remembers them in order."""

    def __init__(self) -> None:
        self.slots: list[Slot] = []

    def token(self, slot: Slot) -> str:
        if slot not in self.slots:
            self.slots.append(slot)
        return f"NLSLOT{self.slots.index(slot)}Q"

    def protect(self, text: str) -> tuple[str, list[FieldProblem]]:
        """Replace every merge field with its slot token; unknown fields are reported, not kept."""
        problems: list[FieldProblem] = []

        def replace(match: re.Match[str]) -> str:
            line = text.count("\n", 0, match.start())
            parsed = FIELD.fullmatch(match.group(1))
            if parsed is None:
                problems.append(FieldProblem(line, f"Platzhalter „{match.group(0)}“ ist nicht lesbar "
                                                   '(so geht es: {{ first_name | default("du") }})'))
                return ""
            name = parsed.group("name")
            if name not in FIELDS:
                known = ", ".join(FIELDS)
                problems.append(FieldProblem(line, f"unbekannter Platzhalter „{name}“ (bekannt: {known})"))
                return ""
            fallback = parsed.group("dq") or parsed.group("sq") or parsed.group("gq") or ""
            return self.token(Slot(name, fallback))

        protected = ANY_FIELD.sub(replace, text)
        for match in LEFTOVER.finditer(protected):  # half a placeholder would reach every reader as is
            line = protected.count("\n", 0, match.start())
            problems.append(FieldProblem(line, f"„{match.group(0)}“ sieht nach einem kaputten Platzhalter aus "
                                               '(so geht es: {{ first_name | default("du") }})'))
        return protected, problems


def split_slots(text: str) -> list[str | int]:
    """Split a rendered text into literal pieces and slot numbers, once per issue."""
    pieces: list[str | int] = []
    for index, piece in enumerate(SLOT.split(text)):
        if index % 2:
            pieces.append(int(piece))
        elif piece:
            pieces.append(piece)
    return pieces


def fill(pieces: list[str | int], slots: list[Slot], values: Mapping[str, str],
         escape: bool) -> str:
    """Join literal pieces with this recipient's values (HTML-escaped when escape is set)."""
    filled = [slots[i].value(values) for i in range(len(slots))]
    if escape:
        filled = [html.escape(value, quote=True) for value in filled]
    return "".join(piece if isinstance(piece, str) else filled[piece] for piece in pieces)


def recipient_values(email: str, name: str, unsubscribe_url: str = "",
                     unsubscribe_subject: str = "") -> dict[str, str]:
    """The merge values for one person; control characters in a name never reach the mail."""
    clean = " ".join(CONTROL.sub(" ", name).split())
    first, last = split_name(clean)
    return {"email": email, "name": clean, "first_name": first, "last_name": last,
            UNSUBSCRIBE: unsubscribe_url, UNSUBSCRIBE_SUBJECT: unsubscribe_subject}


def split_name(name: str) -> tuple[str, str]:
    """First and last name of a whole name, titles skipped: "Dr. Anna Meier" → ("Anna", "Meier").

    A name left alone after a title is a last name ("Frau Meier" → ("", "Meier")), so a
    greeting falls back to its default instead of saying "Hallo Meier".
    """
    words = name.split(" ")
    if len(words) == 1 and is_title(words[0]):
        return "", ""
    titled = 0
    while titled < len(words) - 1 and is_title(words[titled]):
        titled += 1
    rest = words[titled:]
    if titled and len(rest) == 1:
        return "", rest[0]
    return rest[0], " ".join(rest[1:])


def is_title(word: str) -> bool:
    """A title or an abbreviation ("Dr.", "med.", "Dipl.-Psych."), never a first name."""
    return word.endswith(".") or word.casefold() in TITLES
