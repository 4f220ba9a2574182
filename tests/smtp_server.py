"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, with scripted faults.

Faults are set per test, the ones a real provider has: replies for chosen recipients or for
everyone, a reply at MAIL FROM (once or always), "421 … closing connection" followed by hanging
up (as Postfix and throttling providers do, also in the middle of a pipelined exchange), a drop
right after the final ".", a connection drop after k messages, required AUTH, STARTTLS or
implicit TLS with a certificate from a test CA.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Received:
    mail_from: str
    rcpt_to: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]


@dataclass
class Mailbox:
    """The handler: records what arrives and answers as a test asks it to."""

    received: list[Received] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # address -> "550 5.1.1 ..."
    rcpt_replies_once: dict[str, str] = field(default_factory=dict)
    rcpt_reply_all: str | None = None  # every recipient gets this ("451 4.7.1 rate limit exceeded")
    mail_reply: str | None = None
    mail_replies_once: list[str] = field(default_factory=list)  # the next MAIL FROMs get these, in order
    data_replies: dict[str, str] = field(default_factory=dict)  # the reply to the final "." for an address
    drop_after_data: set[str] = field(default_factory=set)  # take the message, then hang up without a reply
    drop_every: int = 0  # close the connection at MAIL FROM after this many messages on it
    delay: float = 0.0  # seconds per accepted message, to make a run slow enough to kill
    pipelining: bool = True  # offer RFC 2920 PIPELINING, as Postfix, Exim and the big providers do
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, address: str) -> int:
        return sum(address in r.rcpt_to for r in self.received)

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        if not getattr(session, "counted", False):
            session.counted = True
            session.accepted_here = 0
            with self.lock:
                self.connections += 1
        return responses

    @staticmethod
    async def _answer(server: SMTP, reply: str) -> str:
        """A 421 is said and then the line is hung up, as Postfix does; what follows is never sent."""
        if reply.startswith("421"):
            await server.push(reply)
            server.transport.close()
        return reply

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        if self.drop_every and getattr(session, "accepted_here", 0) >= self.drop_every:
            server.transport.close()
            return "421 4.3.2 going away"
        with self.lock:
            once = self.mail_replies_once.pop(0) if self.mail_replies_once else None
        if once or self.mail_reply:
            return await self._answer(server, once or self.mail_reply or "")
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        reply = self.rcpt_replies_once.pop(address, None) or self.rcpt_replies.get(address) or self.rcpt_reply_all
        if reply:
            return await self._answer(server, reply)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.delay:
            time.sleep(self.delay)  # blocks this test server only; keeps the client waiting for 250
        address = envelope.rcpt_tos[0]
        if address in self.data_replies:
            return await self._answer(server, self.data_replies[address])
        with self.lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        session.accepted_here = getattr(session, "accepted_here", 0) + 1
        if address in self.drop_after_data:
            server.transport.abort()  # the message is here, the client never hears so
        return "250 2.0.0 Message accepted"


class SmtpServer:
    """aiosmtpd Controller on a free loopback port, started and stopped by a fixture."""

    def __init__(self, mailbox: Mailbox, *, tls: ssl.SSLContext | None = None, implicit_tls: bool = False,
                 users: dict[str, str] | None = None) -> None:
        self.mailbox = mailbox
        self.port = free_port()
        kwargs: dict = {}
        if users is not None:
            def authenticate(server, session, envelope, mechanism, auth_data):
                ok = isinstance(auth_data, LoginPassword) and users.get(auth_data.login.decode()) == \
                    auth_data.password.decode()
                return AuthResult(success=ok, handled=False)
            kwargs.update(authenticator=authenticate, auth_required=True, auth_require_tls=False)
        if tls is not None and not implicit_tls:
            kwargs.update(tls_context=tls, require_starttls=True)
        self.controller = Controller(
            mailbox, hostname="127.0.0.1", port=self.port,
            ssl_context=tls if implicit_tls else None, server_hostname="localhost", **kwargs)

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
