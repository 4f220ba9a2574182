"""How a line of the author's text reads: a sentence's end, a heading, a list item, an address in brackets.

Pasted text (a blog post, a Word document saved as text) has one paragraph per line, headings
as plain lines and "- " lists; Markdown joins such lines into one paragraph. `check` uses these
rules to point at the places, `newsletter new --from` to turn such a text into an issue.
"""

from __future__ import annotations

import itertools
import re

# A sentence ends in . ! ? : or …, perhaps followed by closing quotes or brackets.
SENTENCE_END = re.compile(r"[.!?:…][\"“”»«‘’')\]]*$")
# Whatever a line that is a heading never ends with (a name, a greeting and a list go on).
NOT_A_HEADING_END = re.compile(r"[.,;:!?…\"“”»«‘’')\]\-–—/\\*_]$")
LIST_ITEM = re.compile(r"^\s*(?:[-*+•–]|\d{1,3}[.)])\s+\S")
MARKDOWN_START = re.compile(r"^\s*(?:#|>|\||```|~~~|[-*+]\s|\d{1,3}[.)]\s)")
# An e-mail address or web address in square brackets, not already a Markdown link or image.
BRACKETED = re.compile(
    r"(?<![!\]\\])\[\s*(?P<target>(?:mailto:)?[\w.+-]+@[\w-]+(?:\.[\w-]+)+|(?:https?://|www\.)[^\s\[\]]+?)\s*\]"
    r"(?![(\[:])")
HEADING_MAX_CHARS = 90
HEADING_MAX_WORDS = 12
SHORT_LINE = 45  # lines this short, one after another, were meant as lines (an address, a poem)
WRAP_MAX = 100  # nobody wraps lines by hand at more than this; a longer line ended where its paragraph did


def ends_sentence(line: str) -> bool:
    return bool(SENTENCE_END.search(line.rstrip()))


def hard_break(line: str) -> bool:
    """A line that ends in Markdown's own line break (a backslash or two spaces) keeps it."""
    return line.endswith(("\\", "  "))


def starts_sentence(line: str) -> bool:
    first = line.lstrip()[:1]
    return first.isupper() or first.isdigit() or first in "„\"“»‚'*_"


def looks_like_heading(line: str) -> bool:
    """Short, starts like a sentence, ends without punctuation, and is plain text (no link, no field)."""
    text = line.strip()
    if not text or len(text) > HEADING_MAX_CHARS or len(text.split()) > HEADING_MAX_WORDS:
        return False
    if NOT_A_HEADING_END.search(text) or MARKDOWN_START.match(text) or not starts_sentence(text):
        return False
    return not any(mark in text for mark in ("](", "[", "http", "www.", "@", "`", "{{", "NLSLOT"))


def deliberate_break(line: str, following: str, width: int) -> bool:
    """Whether a line ended by choice: it is longer than anyone wraps by hand, or the next word
    would still have fitted within the block's widest line. A hard-wrapped paragraph breaks
    only where the next word does not fit."""
    words = following.split()
    length = len(line.rstrip())
    return bool(words) and (length > WRAP_MAX or length + 1 + len(words[0]) <= width)


def heading_between(previous: str | None, line: str, following: str | None, width: int | None = None) -> bool:
    """A heading-like line that stands alone and introduces real text, not a closing ("Herzliche Grüße"
    over a name). `width` is the widest line of its block when `following` is in the same block."""
    if following is None or not looks_like_heading(line):
        return False
    if previous is not None and previous.strip() and (hard_break(previous) or not ends_sentence(previous)):
        return False
    if width is not None and not deliberate_break(line, following, width):
        return False
    text = following.strip()
    return bool(LIST_ITEM.match(text)) or ends_sentence(text) or len(text) > len(line.strip())


def breaks_between_paragraphs(lines: list[str]) -> int:
    """How many line ends in a block read as the end of a paragraph: a sentence or a heading ends
    there, and the line was ended by choice (a hard-wrapped paragraph is left alone)."""
    width = max(len(line.rstrip()) for line in lines)
    count = 0
    for index, (line, after) in enumerate(itertools.pairwise(lines)):
        if hard_break(line) or not deliberate_break(line, after, width):
            continue
        previous = lines[index - 1] if index else None
        if (ends_sentence(line) and starts_sentence(after)) or heading_between(previous, line, after, width):
            count += 1
    return count


def reads_as_separate_paragraphs(lines: list[str], at_least: int = 2) -> bool:
    """Lines that Markdown would join but that were meant apart: most line ends (and `at_least`
    of them) close a sentence or a heading (one paragraph per line), or many short lines (an
    address, a poem)."""
    if len(lines) < 2 or any(hard_break(line) for line in lines[:-1]):
        return False
    apart = breaks_between_paragraphs(lines)
    if apart >= at_least and apart * 2 >= len(lines) - 1:
        return True
    return len(lines) >= 3 and max(len(line.strip()) for line in lines[:-1]) <= SHORT_LINE


def link_target(target: str) -> str:
    """Where a bracketed address points: mailto: for an e-mail address, https:// for www."""
    if "@" in target and not target.startswith(("http://", "https://")):
        return target if target.startswith("mailto:") else f"mailto:{target}"
    return f"https://{target}" if target.startswith("www.") else target


def bracket_as_link(match: re.Match[str]) -> str:
    target = match.group("target")
    shown = target.removeprefix("mailto:")
    return f"[{shown}]({link_target(target)})"
