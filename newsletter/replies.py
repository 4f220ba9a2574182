"""What an SMTP reply means for a send: one table, read from top to bottom, first match wins.

The question each rule answers is *whose* problem a reply is. A reply about the account (at the
greeting or at MAIL FROM, or any 421, the server's "I am closing this connection") pauses the
whole run and costs nobody their copy; a temporary reply about one recipient (at RCPT or DATA)
defers that recipient and the walk goes on with everyone else; a permanent one fails that
recipient, and a dead mailbox (5.1.x) marks the address bounced. A streak of the same
temporary reply for several different recipients in a row is the account again: `send.py`
watches for that, since one reply alone cannot tell.

To change a decision, change the table; `tests/test_replies.py` shows each rule at work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Step(StrEnum):
    """Where in the SMTP conversation a reply came."""

    CONNECT = "connect"  # the greeting, EHLO, STARTTLS, AUTH
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"        # the reply to DATA itself (354 expected)
    END = "end"          # the reply to the final "." (250 expected)


class Verdict(StrEnum):
    """What the send does with a reply."""

    SENT = "sent"                   # the server took the message
    MAYBE_SENT = "maybe_sent"       # the connection broke after the data: it may have arrived
    PAUSE = "pause"                 # the account: release the row untouched, pause the run
    RETRY = "retry"                 # this recipient, for now: defer the row, retry later
    NO_SUCH_MAILBOX = "no_such_mailbox"  # this recipient, for good: fail the row, mark bounced
    REFUSED = "refused"             # this recipient's message refused: fail the row
    SENDER_REFUSED = "sender_refused"    # our sender address is refused: stop the run


@dataclass(frozen=True)
class Reply:
    """A server's answer: code (0 when the connection broke instead), text, and the step it came at."""

    code: int
    text: str
    step: Step

    @property
    def status(self) -> str:
        """The enhanced status code (RFC 3463) the text starts with, e.g. "4.7.0", or ""."""
        match = ENHANCED.match(self.text)
        return match.group(0) if match else ""

    @property
    def accepted(self) -> bool:
        return self.step is Step.END and 200 <= self.code < 300

    @property
    def kind(self) -> str:
        """What a streak compares: the code and the enhanced status, not the wording."""
        return f"{self.code} {self.status}".strip()

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip() if self.code else self.text


ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}\b")
# 5.1.1 bad mailbox, 5.1.2 bad domain, 5.1.3 bad syntax, 5.1.6 moved, 5.1.10 null MX (RFC 3463, 7505).
NO_SUCH_MAILBOX = re.compile(r"^5\.1\.(1|2|3|6|10)$")
UNKNOWN_USER = re.compile(r"user unknown|no such user|unknown user|mailbox unavailable|does not exist", re.I)
# A 5xx at RCPT that speaks of the sender or relaying is about us: "Sender address rejected",
# "Relay access denied", 5.1.7 / 5.1.8 (bad sender address or sender domain).
ABOUT_THE_SENDER = re.compile(r"sender|relay|^5\.1\.[78]$", re.I)
# Temporary replies that name a full mailbox are about that mailbox, even in a streak.
MAILBOX_FULL = re.compile(r"^4\.2\.2$|mailbox full|over quota|quota exceeded", re.I)


@dataclass(frozen=True)
class Rule:
    name: str
    verdict: Verdict
    codes: range | tuple[int, ...]
    steps: tuple[Step, ...] = tuple(Step)
    matches: re.Pattern[str] | None = None  # searched in the enhanced status and in the text

    def applies(self, reply: Reply) -> bool:
        if reply.code not in self.codes or reply.step not in self.steps:
            return False
        return self.matches is None or bool(self.matches.search(reply.status) or self.matches.search(reply.text))


TEMPORARY, PERMANENT = range(400, 500), range(500, 600)
RECIPIENT_STEPS = (Step.RCPT, Step.DATA, Step.END)

RULES: tuple[Rule, ...] = (
    Rule("angenommen", Verdict.SENT, (250,), (Step.END,)),
    Rule("Verbindung nach den Daten abgebrochen", Verdict.MAYBE_SENT, (0,), (Step.END,)),
    Rule("Server schließt die Verbindung (421)", Verdict.PAUSE, (421,)),
    Rule("vorübergehend, vor der ersten Empfängerin (Konto)", Verdict.PAUSE, TEMPORARY, (Step.CONNECT, Step.MAIL)),
    Rule("Verbindung vor den Daten abgebrochen", Verdict.PAUSE, (0,), (Step.CONNECT, Step.MAIL, Step.RCPT, Step.DATA)),
    Rule("Absender abgelehnt", Verdict.SENDER_REFUSED, PERMANENT, (Step.CONNECT, Step.MAIL)),
    Rule("Absender oder Weiterleitung abgelehnt", Verdict.SENDER_REFUSED, PERMANENT, RECIPIENT_STEPS,
         ABOUT_THE_SENDER),
    Rule("Postfach gibt es nicht", Verdict.NO_SUCH_MAILBOX, PERMANENT, RECIPIENT_STEPS, NO_SUCH_MAILBOX),
    Rule("Empfänger:in unbekannt", Verdict.NO_SUCH_MAILBOX, (550,), RECIPIENT_STEPS, UNKNOWN_USER),
    Rule("vorübergehend, für diese Empfänger:in", Verdict.RETRY, TEMPORARY, RECIPIENT_STEPS),
    Rule("abgelehnt", Verdict.REFUSED, PERMANENT, RECIPIENT_STEPS),
)


def rule_for(reply: Reply) -> Rule:
    """The first rule that applies; anything unexpected (a 3xx where 250 belongs) is a refusal."""
    return next((rule for rule in RULES if rule.applies(reply)),
                Rule("unerwartete Antwort", Verdict.REFUSED, range(0, 1000)))


def verdict(reply: Reply) -> Verdict:
    return rule_for(reply).verdict


def may_be_a_streak(reply: Reply) -> bool:
    """Whether this temporary reply, repeated for several people in a row, means the account.

    A full mailbox is by definition one person's; everything else (greylisting, "rate limit",
    "try again later") for three different people in a row is the server talking about us.
    """
    return verdict(reply) is Verdict.RETRY and not (MAILBOX_FULL.search(reply.status) or
                                                    MAILBOX_FULL.search(reply.text))
