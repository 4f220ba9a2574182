"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, with scripted faults.

Faults are set per test: replies for chosen recipients, a connection drop after k messages,
required AUTH, STARTTLS or implicit TLS with a certificate from a test CA.
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
    mail_reply: str | None = None
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

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        if self.drop_every and getattr(session, "accepted_here", 0) >= self.drop_every:
            server.transport.close()
            return "421 4.3.2 going away"
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if address in self.rcpt_replies_once:
            return self.rcpt_replies_once.pop(address)
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.delay:
            time.sleep(self.delay)  # blocks this test server only; keeps the client waiting for 250
        with self.lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        session.accepted_here = getattr(session, "accepted_here", 0) + 1
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
