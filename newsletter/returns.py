"""What comes back to her mailbox after a send, read from the raw bytes of one mail.

One mail is one `Returned`: a bounce (RFC 3464 delivery status notification, or another MTA's
own format through flufl.bounce), a complaint (RFC 5965 feedback report), an unsubscribe sent
by mail (Gmail's and Apple Mail's button sends the `mailto:` of List-Unsubscribe), an
auto-reply (RFC 3834), a reader's reply to an issue, or something else. Nothing here talks to
the mailbox or changes anything: `inbox.py` decides what to do.

Her readers write to a therapist. Of a reply, only what she needs to find it in her mailbox is
kept (sender, subject, date); its text is never copied anywhere.
"""

from __future__ import annotations

import email
import email.header
import logging
import re
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses, parseaddr
from enum import StrEnum

# An unsubscribe token (tokens.py): an id may begin with "-" or "_", so the edges
# are "no token character next to it", not \b (which fails beside a "-").
TOKEN_BODY = r"([A-Za-z0-9_-]{1,64}\.[A-Za-z0-9_-]{22})(?![A-Za-z0-9_.-])"  # noqa: S105 - a pattern, not a secret
TOKEN = re.compile(r"(?<![A-Za-z0-9_.-])" + TOKEN_BODY)
ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
UNSUBSCRIBE_WORDS = re.compile(r"\b(abmelden|abmeldung|austragen|abbestellen|unsubscribe|kündigen)\b", re.I)
REPLY_PREFIX = re.compile(r"^\s*((re|aw|wg|fw|fwd|antw)\s*(\[\d+\])?\s*:\s*)+", re.I)
AUTO_SUBJECT = re.compile(
    r"abwesen|out of (the )?office|automatische antwort|automatic reply|auto[- ]?reply|autoreply|"
    r"urlaub|vacation|nicht im büro|bin nicht erreichbar|ooo\b", re.I)


class Kind(StrEnum):
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    AUTO_REPLY = "auto_reply"
    REPLY = "reply"
    OTHER = "other"


@dataclass(frozen=True)
class Failure:
    """One recipient's line in a bounce."""

    recipient: str           # Final-Recipient (or what another MTA's format names)
    original: str = ""       # Original-Recipient, as we sent it, when the report keeps it
    status: str = ""         # e.g. "5.1.1"
    action: str = "failed"   # failed | delayed
    diagnostic: str = ""     # Diagnostic-Code, e.g. "smtp; 550 5.1.1 User unknown"


@dataclass
class Returned:
    kind: Kind
    sender: str = ""
    subject: str = ""
    date: str = ""
    message_id: str = ""
    envid: str = ""                                   # Original-Envelope-Id of a DSN
    failures: list[Failure] = field(default_factory=list)
    referenced: list[str] = field(default_factory=list)  # Message-IDs it refers to (ours among them)
    token: str = ""                                   # an unsubscribe token it carries
    recipients: list[str] = field(default_factory=list)  # a complaint's reported recipients
    note: str = ""                                    # why it was read this way (never the mail's text)


def parse(raw: bytes) -> Message:
    """The mail as the standard library reads it; broken MIME comes back as defects, never an exception."""
    return email.message_from_bytes(raw)  # compat32, the default: no header objects to build


@dataclass(frozen=True)
class Ours:
    """How to recognise our own mail in what comes back: the Message-IDs our sends give
    (`<slug.digest@domain>`) and the subjects of the issues sent."""

    ids: re.Pattern[str]
    subjects: tuple[str, ...] = ()

    def about_an_issue(self, subject: str) -> bool:
        subject = REPLY_PREFIX.sub("", subject).casefold()
        return any(s.casefold() in subject for s in self.subjects if len(s) >= 8)


def classify(raw: bytes, ours: Ours) -> Returned:
    """Read one mail. Auto-replies and replies count only when they are about an issue (they
    refer to one of our Message-IDs, or name an issue's subject): her other mail is not ours."""
    our_ids = ours.ids
    msg = parse(raw)
    found = Returned(Kind.OTHER, sender=_address(msg.get("From", "")), subject=_header(msg, "Subject"),
                     date=_header(msg, "Date"), message_id=_header(msg, "Message-ID").strip())
    content_type = msg.get_content_type()
    report = str(msg.get_param("report-type") or "").lower() if content_type == "multipart/report" else ""
    if report == "delivery-status" or _delivery_status_part(msg) is not None:
        return _dsn(msg, found, our_ids)
    if report == "feedback-report" or _part(msg, "message/feedback-report") is not None:
        return _complaint(msg, found, our_ids)
    if _looks_like_a_bounce(msg, found):
        legacy = _legacy_bounce(msg, found, our_ids)
        if legacy is not None:
            return legacy
    found.referenced = _references(msg, our_ids)
    subject = REPLY_PREFIX.sub("", found.subject)
    text = _text(msg)
    token = TOKEN.search(found.subject) or TOKEN.search(text[:2000])
    if token and (UNSUBSCRIBE_WORDS.search(found.subject) or UNSUBSCRIBE_WORDS.search(text[:2000])):
        found.kind, found.token, found.note = Kind.UNSUBSCRIBE, token.group(1), "mit Abmelde-Token"
        return found
    about_us = bool(found.referenced) or ours.about_an_issue(found.subject)
    if (_auto_submitted(msg) or AUTO_SUBJECT.search(found.subject)) and about_us:
        found.kind = Kind.AUTO_REPLY
        return found
    if UNSUBSCRIBE_WORDS.match(subject) or (UNSUBSCRIBE_WORDS.search(text) and len(_own_words(text)) <= 200):
        found.kind, found.note = Kind.UNSUBSCRIBE, "ohne Token, nach Absender"
        return found
    if about_us and not _auto_submitted(msg):
        found.kind = Kind.REPLY
    return found


# -- bounces ----------------------------------------------------------------------------------


def _dsn(msg: Message, found: Returned, our_ids: re.Pattern[str]) -> Returned:
    """RFC 3464: per-message fields (Original-Envelope-Id), then one block per recipient."""
    found.kind = Kind.BOUNCE
    status = _delivery_status_part(msg)
    blocks = _status_blocks(status) if status is not None else []
    if blocks:
        found.envid = _xtext_decode(blocks[0].get("Original-Envelope-Id", "").strip())
    for block in blocks[1:] if len(blocks) > 1 else blocks:
        recipient = _typed_address(block.get("Final-Recipient", ""))
        if not recipient:
            continue
        code = ENHANCED.search(block.get("Status", "") or "")
        found.failures.append(Failure(
            recipient=recipient, original=_typed_address(block.get("Original-Recipient", "")),
            status=code.group(0) if code else "", action=(block.get("Action", "") or "failed").strip().lower(),
            diagnostic=" ".join((block.get("Diagnostic-Code", "") or "").split())[:300]))
    found.referenced = _returned_ids(msg, our_ids)
    found.note = "Zustellbericht (RFC 3464)"
    return found


def _delivery_status_part(msg: Message) -> Message | None:
    return _part(msg, "message/delivery-status") or _part(msg, "message/global-delivery-status")


def _status_blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status part, however the parser delivered them."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    text = payload if isinstance(payload, str) else ""
    return [email.message_from_string(block.strip() + "\n") for block in re.split(r"\r?\n\s*\r?\n", text)
            if block.strip()]


def _looks_like_a_bounce(msg: Message, found: Returned) -> bool:
    sender, subject = found.sender.lower(), found.subject.lower()
    return (msg.get("X-Failed-Recipients") is not None or sender.startswith(("mailer-daemon@", "postmaster@"))
            or bool(re.search(r"undeliver|unzustellbar|delivery (status notification|failure)|"
                              r"mail delivery (failed|system)|returned mail|nicht zugestellt", subject)))


def _legacy_bounce(msg: Message, found: Returned, our_ids: re.Pattern[str]) -> Returned | None:
    """Exim, qmail, old Exchange and others: flufl.bounce finds the addresses, the text the codes."""
    from flufl.bounce import all_failures

    logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # noqa: BLE001 - a detector choking on odd mail must not stop the inbox
        return None
    if not temporary and not permanent:
        return None
    text = _text(msg)
    found.kind, found.note = Kind.BOUNCE, "Unzustellbarkeitsmeldung (ohne RFC 3464)"
    for address, action in [*((a, "failed") for a in permanent), *((a, "delayed") for a in temporary)]:
        recipient = address.decode("utf-8", "replace") if isinstance(address, bytes) else str(address)
        near = text[max(0, text.lower().find(recipient.lower()) - 100):][:600] if recipient else text
        code = ENHANCED.search(near) or ENHANCED.search(text)
        status = code.group(0) if code else ("5.0.0" if action == "failed" else "4.0.0")
        smtp = re.search(r"\b([45]\d\d)[ -][^\n]{0,200}", near)
        found.failures.append(Failure(recipient=recipient, status=status, action=action,
                                      diagnostic=" ".join(smtp.group(0).split())[:300] if smtp else ""))
    found.referenced = _returned_ids(msg, our_ids)
    return found


# -- complaints -------------------------------------------------------------------------------


def _complaint(msg: Message, found: Returned, our_ids: re.Pattern[str]) -> Returned:
    """RFC 5965: a feedback report and (often redacted) the original message or its headers."""
    found.kind, found.note = Kind.COMPLAINT, "Beschwerde (RFC 5965)"
    report = _part(msg, "message/feedback-report")
    if report is not None:
        blocks = _status_blocks(report)
        for block in blocks:
            for value in block.get_all("Original-Rcpt-To", []) or []:
                found.recipients.append(_address(value))
    found.referenced = _returned_ids(msg, our_ids)
    returned = _returned_text(msg)
    token = re.search(r"/u/" + TOKEN_BODY, returned)
    if token:
        found.token = token.group(1)
    return found


# -- helpers ----------------------------------------------------------------------------------


def _parts(msg: Message) -> list[tuple[str, Message]]:
    """Every part with its content type, worked out once per mail (the checks ask many times)."""
    memo = vars(msg)
    if "_typed_parts" not in memo:
        memo["_typed_parts"] = [(part.get_content_type(), part) for part in msg.walk()]
    return memo["_typed_parts"]


def _part(msg: Message, content_type: str) -> Message | None:
    return next((part for kind, part in _parts(msg) if kind == content_type), None)


def _returned_text(msg: Message) -> str:
    """The headers (and what is kept of the body) of the message a report returns to us."""
    for kind, part in _parts(msg):
        if kind in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else None
            if isinstance(inner, Message):
                return _flat(inner)
        if kind in ("text/rfc822-headers", "text/global-headers"):
            return _decoded(part)
    return _text(msg)


def _returned_ids(msg: Message, our_ids: re.Pattern[str]) -> list[str]:
    return list(dict.fromkeys(our_ids.findall(_returned_text(msg)) or our_ids.findall(_text(msg))))


def _references(msg: Message, our_ids: re.Pattern[str]) -> list[str]:
    heads = " ".join(_header(msg, name) for name in ("In-Reply-To", "References"))
    return list(dict.fromkeys(our_ids.findall(heads)))


def _auto_submitted(msg: Message) -> bool:
    """RFC 3834 and the older signs of a machine answering."""
    auto = (msg.get("Auto-Submitted", "") or "").strip().lower()
    precedence = (msg.get("Precedence", "") or "").strip().lower()
    return (bool(auto) and auto != "no") or precedence == "auto_reply" or any(
        msg.get(name) is not None for name in ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress"))


def _text(msg: Message) -> str:
    """The mail's plain text (first text/plain part, else text/html without tags), for looking, never keeping."""
    memo = vars(msg)
    if "_text" not in memo:
        plain = next((p for kind, p in _parts(msg) if kind == "text/plain"
                      and not str(p.get("Content-Disposition", "")).startswith("attachment")), None)
        rich = next((p for kind, p in _parts(msg) if kind == "text/html"), None)
        memo["_text"] = (_decoded(plain) if plain is not None
                         else re.sub(r"<[^>]+>", " ", _decoded(rich)) if rich is not None else "")
    return memo["_text"]


def _decoded(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        payload = str(part.get_payload() or "").encode("utf-8", "replace")
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def _own_words(text: str) -> str:
    """The text without quoted lines ("> …") and without what follows a signature or a quote header."""
    lines = []
    for line in text.splitlines():
        if line.startswith(">") or re.match(r"^(-- |am .* schrieb|on .* wrote)", line.strip(), re.I):
            break
        lines.append(line)
    return " ".join(" ".join(lines).split())


def _flat(msg: Message) -> str:
    """A parsed message's header lines and undecoded text, enough to find ids and links in it
    (a tenth of what `as_string()` costs, which folds and re-encodes every header)."""
    return "\n".join(f"{name}: {value}\n" if isinstance(value, str) else f"{name}:\n"
                     for part in msg.walk() for name, value in part.items()) + "\n" + "\n".join(
        payload for part in msg.walk() if isinstance(payload := part.get_payload(), str))


def _header(msg: Message, name: str) -> str:
    value = msg.get(name, "")
    if isinstance(value, str) and "=?" not in value:
        return " ".join(value.split())  # nothing encoded: decoding would return it as it is
    try:
        return " ".join(str(email.header.make_header(email.header.decode_header(str(value)))).split())
    except (ValueError, LookupError, UnicodeError):
        return " ".join(str(value).split())


PLAIN_ADDRESS = re.compile(r'\s*(?:[\w .\'!-]*<)?([^\s<>()\[\]",;:@\\]+@[A-Za-z0-9.-]+)>?'
                           r'(?:\s*\([\w .\'!-]*\))?\s*')  # anna@x.org, Anna Müller <anna@x.org>, a@x (Anna)


def _plain(value: object) -> str | None:
    """The address of the common plain forms, without the standard library's slow full parser."""
    if not isinstance(value, str) or not (plain := PLAIN_ADDRESS.fullmatch(value)):
        return None
    return plain.group(1) if value.count("<") == value.count(">") == ("<" in value) else None


def _address(value: str) -> str:
    return _plain(value) or parseaddr(str(value))[1].strip()


def _typed_address(value: str) -> str:
    """`rfc822; anna@example.org` → anna@example.org (RFC 3464 address-type; value)."""
    _, _, address = str(value).partition(";")
    if plain := _plain(address):
        return plain
    found = getaddresses([address.strip() or str(value)])
    return found[0][1].strip() if found else ""


def _xtext_decode(value: str) -> str:
    return re.sub(r"\+([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), value)
