"""RFC 2047 headers written by hand, so that Subject and display names decode back exactly.

The standard library's folder loses or doubles the space between an encoded and a plain
word and splits names inside a word. Here a header value is cut into words at its spaces:
words that can stay ASCII stay as they are, every other run of words becomes encoded words
that carry the spaces between those words inside them (RFC 2047 §6.2: whitespace between
two encoded words is not shown). Lines are folded only at the space between two words, so
unfolding gives back exactly that one space; an encoded word is at most 75 characters and a
line at most 78 where the words allow it (a plain word longer than a line stays whole).

Both of Python's decoders agree with this and with mail clients: the `policy=default`
parser and `email.header.decode_header`. Display names are the one place where they differ
(Python's address parser reads the whitespace between two encoded words as a space), so a
name's run of non-ASCII words is always one encoded word: longer than 75 characters only
when the run itself is, which no real name is (about 45 bytes fit).
"""

from __future__ import annotations

import base64
import re
import unicodedata

MAX_LINE = 78
MAX_WORD = 75
# One line may not exceed 998 characters (RFC 5322 2.1.1); " " + word must fit.
LONGEST_WORD = 997
_OPEN_Q, _OPEN_B, _CLOSE = "=?utf-8?q?", "=?utf-8?b?", "?="
OVERHEAD = len(_OPEN_Q) + len(_CLOSE)

# Literal in a Q-encoded word: in a phrase only RFC 2047 5(3)'s set; in unstructured text
# any printable ASCII except the ones Q itself uses (= ? _) and the quote characters.
_PHRASE_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_TEXT_SAFE = frozenset(set(range(0x21, 0x7F)) - set(b'=?_"\\'))


def _q_table(safe: frozenset[int]) -> tuple[str, ...]:
    return tuple("_" if b == 0x20 else chr(b) if b in safe else f"={b:02X}" for b in range(256))


_Q_PHRASE = _q_table(_PHRASE_SAFE)
_Q_TEXT = _q_table(_TEXT_SAFE)

# A plain word in unstructured text: printable ASCII. In a phrase: atext only (RFC 5322 3.2.3).
_PLAIN_TEXT = re.compile(r"[!-~]+")
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]"
_PLAIN_PHRASE = re.compile(_ATEXT + "+")
_ATOMS = re.compile(rf"{_ATEXT}+(?: {_ATEXT}+)*")
_QUOTABLE = re.compile(r"[ -~]+")
# decode_header's make_header treats these as a space at the edge of a plain word next to an
# encoded one, and then drops the real space when the line is folded there.
_STICKY = "()\\"


def encoded_word(text: str, phrase: bool = False) -> str:
    """One encoded word for `text`: Q, which stays readable, unless B is less than half as long."""
    data = text.encode("utf-8")
    table = _Q_PHRASE if phrase else _Q_TEXT
    q = "".join([table[b] for b in data])
    if _prefers_b(len(q), len(data)):
        return _OPEN_B + base64.b64encode(data).decode("ascii") + _CLOSE
    return _OPEN_Q + q + _CLOSE


def _q_cost(data: bytes, table: tuple[str, ...]) -> int:
    return sum(len(table[b]) for b in data)


def _prefers_b(q_length: int, n_bytes: int) -> bool:
    """B only for text that Q would more than double (emoji, non-Latin scripts): filters
    look twice at base64 in From and Subject, and Q shows German text almost as it is."""
    return q_length > 2 * 4 * -(-n_bytes // 3)


def _word_length(q_length: int, n_bytes: int) -> int:
    b_length = 4 * -(-n_bytes // 3)
    return OVERHEAD + (b_length if _prefers_b(q_length, n_bytes) else q_length)


class _Line:
    """The folded value being written: pieces joined by a space, or by CRLF + space when full."""

    def __init__(self, start: int) -> None:
        self.parts: list[str] = []
        self.column = start
        self.separate = False  # does the next piece need a space (or a fold) before it?

    def room(self) -> int:
        return MAX_LINE - self.column - (1 if self.separate else 0)

    def place(self, piece: str) -> None:
        if self.separate:
            if self.column + 1 + len(piece) > MAX_LINE:
                self.fold()
            else:
                self.parts.append(" ")
                self.column += 1
        self.parts.append(piece)
        self.column += len(piece)
        self.separate = True

    def fold(self) -> None:
        self.parts.append("\r\n ")
        self.column = 1
        self.separate = False

    def text(self) -> str:
        return "".join(self.parts)


def _runs(words: list[str], plain: list[bool]) -> list[tuple[str, bool]]:
    """Consecutive words to encode become one run; its inner spaces travel inside."""
    tokens: list[tuple[str, bool]] = []
    run: list[str] = []
    for word, is_plain in zip(words, plain, strict=True):
        if is_plain:
            if run:
                tokens.append((" ".join(run), True))
                run = []
            tokens.append((word, False))
        else:
            run.append(word)
    if run:
        tokens.append((" ".join(run), True))
    return tokens


def _classify_text(text: str) -> list[tuple[str, bool]]:
    words = text.split(" ")
    plain = [bool(_PLAIN_TEXT.fullmatch(w)) and "=?" not in w for w in words]
    # A space beyond the one between two words travels inside an encoded word next to it.
    for i, word in enumerate(words):
        if not word:
            plain[i + 1 if i + 1 < len(words) else i - 1] = False
    changed = True
    while changed:  # a plain word with ( ) \ at its edge next to an encoded one joins it
        changed = False
        for i, word in enumerate(words):
            if not plain[i]:
                continue
            if (i > 0 and not plain[i - 1] and word[0] in _STICKY) or (
                    i + 1 < len(words) and not plain[i + 1] and word[-1] in _STICKY):
                plain[i] = False
                changed = True
    return _runs(words, plain)


def _graphemes(text: str) -> list[str]:
    """User-perceived characters, near enough: never cut before a combining mark, a joiner,
    a variation selector, a skin tone or a tag, nor inside a flag's pair of letters."""
    clusters: list[str] = []
    regional = 0
    for char in text:
        code = ord(char)
        is_regional = 0x1F1E6 <= code <= 0x1F1FF
        extends = clusters and (
            unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Mc")
            or code == 0x200D or clusters[-1].endswith("\u200d")
            or 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF
            or 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE007F
            or (is_regional and regional % 2 == 1))
        regional = regional + 1 if is_regional else 0
        if extends:
            clusters[-1] += char
        else:
            clusters.append(char)
    return clusters


def _longest_fit(text: str, room: int, table: tuple[str, ...] = _Q_TEXT) -> int:
    """How many characters of `text` (cut between graphemes) fit in one encoded word of `room`."""
    taken, q_length, n_bytes = 0, 0, 0
    for cluster in _graphemes(text):
        data = cluster.encode("utf-8")
        q, n = q_length + _q_cost(data, table), n_bytes + len(data)
        if _word_length(q, n) > room:
            break
        taken, q_length, n_bytes = taken + len(cluster), q, n
    if taken == 0:  # a cluster too big for a word on its own: cut between code points
        while taken < len(text) and _word_length(
                _q_cost(text[:taken + 1].encode(), table), len(text[:taken + 1].encode())) <= room:
            taken += 1
    return max(taken, 1)


def _place_run(line: _Line, run: str) -> None:
    """Encoded words for one run, cut after a space where the line is full, inside a word only
    when that word alone is longer than one encoded word holds."""
    segments = re.findall(r"[^ ]* |[^ ]+", run) or [""]
    costs = [(_q_cost(s.encode(), _Q_TEXT), len(s.encode())) for s in segments]
    i = 0
    while i < len(segments):
        room = min(MAX_WORD, line.room())
        j, q_length, n_bytes = i, 0, 0
        while j < len(segments):
            q, n = q_length + costs[j][0], n_bytes + costs[j][1]
            if _word_length(q, n) > room:
                break
            j, q_length, n_bytes = j + 1, q, n
        if j > i:
            line.place(encoded_word("".join(segments[i:j])))
            i = j
        elif line.separate:
            line.fold()  # the next word fits on a fresh line
        else:  # a word longer than an encoded word holds: cut it between characters
            word = segments[i].removesuffix(" ")
            fits = len(word) < len(segments[i]) and _word_length(
                _q_cost(word.encode(), _Q_TEXT), len(word.encode())) <= room
            cut = len(word) if fits else _longest_fit(segments[i], room)  # else its space goes on
            line.place(encoded_word(segments[i][:cut]))
            segments[i] = segments[i][cut:]
            costs[i] = (_q_cost(segments[i].encode(), _Q_TEXT), len(segments[i].encode()))
            if not segments[i]:
                i += 1


def encode_text(value: str, header_name: str) -> str:
    """An unstructured header's value (Subject): plain where ASCII, folded between words.

    The result goes after `header_name + ": "`; continuation lines start with CRLF and a space.
    """
    if not value:
        return ""
    if _PLAIN_TEXT.fullmatch(value.replace(" ", "!")) and "=?" not in value and "  " not in value \
            and not value.startswith(" ") and not value.endswith(" ") \
            and len(header_name) + 2 + len(value) <= MAX_LINE:
        return value  # the common ASCII subject on one line
    line = _Line(len(header_name) + 2)
    for text, encode in _classify_text(value):
        if encode:
            _place_run(line, text)
        else:
            line.place(text)
    return line.text()


def normalize_name(name: str) -> str:
    """A display name as it is written: single spaces, no line breaks or tabs."""
    return " ".join(name.split())


def encode_phrase(name: str, header_name: str, column: int | None = None) -> str:
    """A display name as a header phrase: atoms, a quoted string, or atoms and encoded words.

    Each run of words that needs encoding is a single encoded word (see the module's
    docstring); only a run too long for one line is cut, between its words.
    """
    line = _Line(len(header_name) + 2 if column is None else column)
    _place_phrase(line, normalize_name(name))
    return line.text()


def _place_phrase(line: _Line, name: str) -> None:
    if name.isascii() and "=?" not in name:
        if _ATOMS.fullmatch(name):
            for word in name.split(" "):
                line.place(word)
            return
        if _QUOTABLE.fullmatch(name):
            words = name.replace("\\", "\\\\").replace('"', '\\"').split(" ")
            words[0] = '"' + words[0]
            words[-1] += '"'
            for word in words:
                line.place(word)
            return
    words = name.split(" ")
    plain = [bool(_PLAIN_PHRASE.fullmatch(w)) and "=?" not in w for w in words]
    for text, encode in _runs(words, plain):
        if not encode:
            line.place(text)
            continue
        word = encoded_word(text, phrase=True)
        if len(word) > line.room():  # base64 may still fit where the line has room left
            shorter = _OPEN_B + base64.b64encode(text.encode()).decode("ascii") + _CLOSE
            word = min(word, shorter, key=len)
        if len(word) <= LONGEST_WORD:
            line.place(word)
            continue
        for part in _split_long(text):  # only for names far beyond any real one
            line.place(encoded_word(part, phrase=True))


def _split_long(text: str) -> list[str]:
    parts, current = [], ""
    for segment in re.findall(r"[^ ]* |[^ ]+", text):
        if current and len(encoded_word(current + segment, phrase=True)) > MAX_WORD:
            parts.append(current)
            current = ""
        current += segment
        while len(encoded_word(current, phrase=True)) > MAX_WORD:
            cut = _longest_fit(current, MAX_WORD, _Q_PHRASE)
            parts.append(current[:cut])
            current = current[cut:]
    return [*parts, current] if current else parts


def _one_line(name: str) -> str:
    """Atoms and one encoded word per run, joined by spaces: the phrase when it fits a line."""
    pieces: list[str] = []
    run: list[str] = []
    for word in name.split(" "):
        if _PLAIN_PHRASE.fullmatch(word) and "=?" not in word:
            if run:
                pieces.append(encoded_word(" ".join(run), phrase=True))
                run = []
            pieces.append(word)
        else:
            run.append(word)
    if run:
        pieces.append(encoded_word(" ".join(run), phrase=True))
    return " ".join(pieces)


def address(name: str, addr_spec: str, header_name: str) -> str:
    """`Name <address>` as a header value: only the name is quoted or encoded, never the address."""
    name = normalize_name(name)
    if not name:
        return addr_spec
    room = MAX_LINE - len(header_name) - 2 - len(addr_spec) - 3
    if name.isascii() and "=?" not in name:
        if _ATOMS.fullmatch(name) and len(name) <= room:
            return f"{name} <{addr_spec}>"  # the common case, without building anything
    else:
        phrase = _one_line(name)  # a typical name with umlauts: one encoded word, one line
        if len(phrase) <= room:
            return f"{phrase} <{addr_spec}>"
    line = _Line(len(header_name) + 2)
    _place_phrase(line, name)
    line.place(f"<{addr_spec}>")
    return line.text()


def ascii_domain(domain: str) -> str:
    """A domain as DNS knows it: IDNA 2008 with UTS 46 (straße.de is xn--strae-oqa.de, not strasse.de)."""
    if domain.isascii():
        return domain
    import idna  # only for a domain with umlauts

    return idna.encode(domain, uts46=True).decode("ascii")


def ascii_address(address: str) -> str:
    """The address as it goes on the wire: an internationalised domain in its ASCII form."""
    local, _, domain = address.rpartition("@")
    return f"{local}@{ascii_domain(domain)}"
