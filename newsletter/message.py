"""Per-recipient MIME messages, fast: encode the issue once, then splice bytes per person.

Building an `EmailMessage` per recipient costs milliseconds; here the headers and both
quoted-printable bodies are encoded once per issue, cut at the merge-field slots. Each
literal piece ends in a soft line break, so a spliced value always starts at column 0 and
no line can exceed 76 bytes whatever the value's length. The bytes decode to exactly what
`RenderedIssue.personalize` gives for that person.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import html
import re
import secrets
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING

from newsletter.config import Config
from newsletter.headers import address, ascii_address, ascii_domain, encode_phrase, encode_text
from newsletter.merge import UNSUBSCRIBE, UNSUBSCRIBE_SUBJECT, Slot, recipient_values
from newsletter.tokens import unsubscribe_links

if TYPE_CHECKING:  # building a message needs neither Jinja2 nor the renderer
    from newsletter.render import RenderedIssue

CRLF = b"\r\n"
MAX_LINE = 76


@dataclass(frozen=True)
class Recipient:
    """Who a message goes to; `id` is the subscriber id the unsubscribe token carries."""

    id: str
    email: str
    name: str = ""


@dataclass(frozen=True)
class OutgoingMessage:
    recipient: Recipient
    envelope_to: str
    message_id: str
    data: bytes


def _qp(data: bytes) -> bytes:
    """Quoted-printable with CRLF line ends (b2a_qp keeps whatever ends the input had)."""
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
    return encoded.replace(b"\r\n", b"\n").replace(b"\n", CRLF)


def _cut(line: bytes) -> int:
    """Where a soft line break can go so the line keeps room for its "=": never inside an =XX escape."""
    cut = MAX_LINE - 1
    while b"=" in line[cut - 2:cut]:
        cut -= 1
    return cut


def _soft_end(encoded: bytes) -> bytes:
    """End a piece with a soft line break so the next piece starts a fresh line."""
    if not encoded or encoded.endswith(CRLF):
        return encoded
    start = encoded.rfind(b"\n") + 1
    last = encoded[start:]
    if len(last) < MAX_LINE:
        return encoded + b"=" + CRLF
    cut = _cut(last)
    return encoded[:start] + last[:cut] + b"=" + CRLF + last[cut:] + b"=" + CRLF


def _no_leading_dot(encoded: bytes) -> bytes:
    """A line that starts with "." would be dot-stuffed (copied) on every send (RFC 5321 4.5.2);
    written "=2E", the same character in quoted-printable, the message goes out as it is."""
    if not encoded.startswith(b".") and b"\n." not in encoded:
        return encoded
    lines = []
    for line in encoded.split(CRLF):
        while line.startswith(b"."):
            line = b"=2E" + line[1:]
            if len(line) <= MAX_LINE:
                break
            cut = _cut(line)
            lines.append(line[:cut] + b"=")
            line = line[cut:]
        lines.append(line)
    return CRLF.join(lines)


def encode_piece(text: str) -> bytes:
    return _no_leading_dot(_soft_end(_qp(text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8"))))


def address_header(name: str, address_spec: str, header_name: str = "To") -> str:
    """`Name <address>`: only the display name is quoted or RFC 2047-encoded, never the address."""
    return address(name, ascii_address(address_spec), header_name)


def subject_header(subject: str) -> str:
    """The Subject line, RFC 2047-encoded where needed and folded between words (newsletter.headers)."""
    return "Subject: " + encode_text(subject, "Subject")


def list_id_value(name: str, list_id: str) -> str:
    """The List-Id: a quoted name when ASCII, else atoms and encoded words (never inside quotes)."""
    if name.isascii() and "=?" not in name:
        phrase = '"' + " ".join(name.replace("\\", "").replace('"', "").split()) + '"'
    else:
        phrase = encode_phrase(name, "List-Id")
    last = phrase.rpartition("\n")[2] if "\n" in phrase else "List-Id: " + phrase
    return f"{phrase}{_space(len(last) + 1 + len(list_id) + 2)}<{list_id}>"


def _space(line_length: int) -> str:
    """The space before the next item of a structured header, folded if the line would pass 78."""
    return " " if line_length <= 78 else "\r\n "


class MessageFactory:
    """All recipients' messages for one issue; `build` only splices pre-encoded bytes."""

    def __init__(self, rendered: RenderedIssue, config: Config, secret: bytes,
                 subject_prefix: str = "", values: dict[str, str] | None = None) -> None:
        self.config = config
        self.secret = secret
        self.slots: list[Slot] = rendered.slots
        self.fixed_values = values  # test sends: the same sample values for everybody
        nl = config.newsletter
        self.domain = ascii_domain(nl.from_email.rpartition("@")[2])
        self.envelope_from = ascii_address(nl.from_email)
        self.slug = re.sub(r"[^A-Za-z0-9.-]+", "-", rendered.issue.slug.encode("ascii", "replace").decode())
        self.base_url = config.base_url
        self.language = nl.language
        self.boundary = "=_" + secrets.token_hex(16)
        self._date_cache = (-1, "")
        # Where the Message-ID does not fit after its name, it goes on a line of its own.
        self._id_space = _space(len("Message-ID: ") + len(self.message_id(Recipient("x" * 40, ""))))
        subject = f"{subject_prefix} {rendered.issue.subject}".strip()
        head = [
            "From: " + address_header(nl.from_name, nl.from_email, "From"),
            *(["Reply-To: " + address_header("", nl.reply_to, "Reply-To")] if nl.reply_to else []),
            subject_header(subject),
            "List-Id: " + list_id_value(nl.name, config.list_id),
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
            "MIME-Version: 1.0",
            'Content-Type: multipart/alternative;\r\n boundary="' + self.boundary + '"',
        ]
        self.head = ("\r\n".join(head) + "\r\n").encode("ascii")
        part = "--{b}\r\nContent-Type: text/{kind}; charset=\"utf-8\"\r\n" \
               "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        self.text_open = part.format(b=self.boundary, kind="plain").encode("ascii")
        self.html_open = ("\r\n" + part.format(b=self.boundary, kind="html")).encode("ascii")
        self.close = f"\r\n--{self.boundary}--\r\n".encode("ascii")
        self.text_pieces = [p if isinstance(p, int) else encode_piece(p) for p in rendered.text_pieces]
        self.html_pieces = [p if isinstance(p, int) else encode_piece(p) for p in rendered.html_pieces]

    def message_id(self, recipient: Recipient) -> str:
        """Stable per issue and person, so a retried message keeps its Message-ID."""
        if self.fixed_values is not None:
            return f"<{self.slug}.test.{secrets.token_hex(8)}@{self.domain}>"
        digest = hmac.new(self.secret, f"{self.slug}\0{recipient.id}".encode(), hashlib.sha256)
        return f"<{self.slug}.{digest.hexdigest()[:20]}@{self.domain}>"

    def _date(self, when: float | None) -> str:
        """The Date header, formatted once per second rather than once per message."""
        second = int(when if when is not None else time.time())
        cached_second, text = self._date_cache  # one tuple: threads never see half an update
        if second != cached_second:
            text = formatdate(second, localtime=True)
            self._date_cache = (second, text)
        return text

    def build(self, recipient: Recipient, date: float | None = None, message_id: str = "") -> OutgoingMessage:
        """This person's message; `message_id` when the caller made it already (it is an HMAC)."""
        unsubscribe, by_mail, mailto = unsubscribe_links(self.base_url, self.envelope_from, self.secret,
                                                         recipient.id, self.language)
        values = self.fixed_values if self.fixed_values is not None else recipient_values(
            recipient.email, recipient.name)
        values = {**values, UNSUBSCRIBE: unsubscribe, UNSUBSCRIBE_SUBJECT: by_mail}
        texts = [slot.value(values) for slot in self.slots]
        plain = [encode_piece(text) for text in texts]
        escaped = [piece if (quoted := html.escape(text, quote=True)) == text else encode_piece(quoted)
                   for text, piece in zip(texts, plain, strict=True)]
        message_id = message_id or self.message_id(recipient)
        to = ascii_address(recipient.email)
        head = (
            f"To: {address_header(recipient.name, recipient.email)}\r\n"
            f"Date: {self._date(date)}\r\n"
            f"Message-ID:{self._id_space}{message_id}\r\n"
            f"List-Unsubscribe: <{unsubscribe}>, <{mailto}>\r\n"
        ).encode("ascii")
        data = b"".join((
            self.head, head, CRLF, self.text_open,
            *(p if isinstance(p, bytes) else plain[p] for p in self.text_pieces),
            self.html_open,
            *(p if isinstance(p, bytes) else escaped[p] for p in self.html_pieces),
            self.close,
        ))
        return OutgoingMessage(recipient, to, message_id, data)


REQUIRED_HEADERS = (b"From", b"To", b"Subject", b"Date", b"Message-ID", b"List-Id",
                    b"List-Unsubscribe", b"List-Unsubscribe-Post")


def validate_message(data: bytes) -> list[str]:
    """The wire rules every message must keep; used by `send --dry-run` and the tests."""
    problems = []
    if not data.isascii():
        problems.append("Nicht-ASCII-Bytes in der Nachricht")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if any(len(line) > 998 for line in lines):
        problems.append("Kopfzeile länger als 998 Bytes")
    if any(len(line) > MAX_LINE for line in body.split(b"\r\n")):
        problems.append(f"Textzeile länger als {MAX_LINE} Bytes")
    for name in REQUIRED_HEADERS:
        found = sum(1 for line in lines if line.split(b":", 1)[0].lower() == name.lower())
        if found != 1:
            problems.append(f"Kopfzeile {name.decode()} kommt {found}-mal vor")
    return problems
