"""Transports: SMTP (one verified, reused connection) or the outbox folder (.eml files).

Each delivery returns a `Delivery` saying what the server answered. Problems that concern one
recipient come back as a Delivery; problems that concern the whole run (login, TLS, refused
sender, unreachable server) raise TransportError naming host:port.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import smtplib
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from newsletter.config import SmtpSettings
from newsletter.errors import TransportError

PASSWORD_ENV = "NEWSLETTER_SMTP_PASSWORD"  # noqa: S105 - the variable's name, not a password
# Replies that mean "you are sending too much", not "this recipient has a problem".
LIMIT_REPLY = re.compile(r"rate|limit|too many|exceeded|throttl|4\.7\.0|4\.5\.3|try again later", re.IGNORECASE)
MAILBOX_FULL = re.compile(r"\b4\.2\.2\b|mailbox full|over quota", re.IGNORECASE)
# 5.1.1 bad mailbox, 5.1.2 bad domain, 5.1.3 bad syntax, 5.1.6 moved, 5.1.10 null MX (RFC 3463, 7505).
NO_SUCH_MAILBOX = re.compile(r"\b5\.1\.(1|2|3|6|10)\b")
SENDER_OR_RELAY = re.compile(r"sender|relay|5\.1\.[78]\b", re.IGNORECASE)


@dataclass(frozen=True)
class Delivery:
    """The server's answer for one message, and at which step it came (connect, mail, rcpt, data)."""

    code: int
    reply: str
    accepted: bool = False
    maybe_delivered: bool = False  # the connection broke after the data went out
    step: str = "data"

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500 or (self.code == 0 and not self.maybe_delivered)

    @property
    def no_such_user(self) -> bool:
        """The mailbox does not exist (5.1.1 and kin): mark the address bounced, never mail it again."""
        if self.code < 500 or SENDER_OR_RELAY.search(self.reply):
            return False
        return bool(NO_SUCH_MAILBOX.search(self.reply)) or (
            self.code == 550 and bool(re.search(r"user unknown|no such user|mailbox unavailable", self.reply, re.I)))

    @property
    def sender_refused(self) -> bool:
        """A 5xx about us, not the recipient (sender or relaying refused): no recipient gets through."""
        return self.code >= 500 and (self.step == "mail" or bool(SENDER_OR_RELAY.search(self.reply)))

    @property
    def provider_limit(self) -> bool:
        """The provider says "too much for now": pause the run instead of burning through the list.

        Any 4xx before a recipient is named (greeting, MAIL FROM) concerns the whole account; at
        RCPT or DATA only replies that speak of rates count, never a full mailbox (4.2.2).
        """
        if not 400 <= self.code < 500 or MAILBOX_FULL.search(self.reply):
            return False
        return self.step in ("connect", "mail") or bool(LIMIT_REPLY.search(self.reply))


Data = bytes | Callable[[], bytes]  # the message, or how to build it while the server answers MAIL/RCPT


class Transport(Protocol):
    """`deliver` calls `before_end` once the data is out and before the message is complete (the
    final "." or the outbox file's rename): the moment a send journal makes its state durable."""

    description: str

    def deliver(self, sender: str, recipient: str, data: Data,
                before_end: Callable[[], None] | None = None) -> Delivery: ...

    def close(self) -> None: ...


class OutboxTransport:
    """Writes each message as an .eml file; the default until an SMTP host is configured."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.description = f"Postausgang {folder}"
        self.count = 0

    def deliver(self, sender: str, recipient: str, data: Data,
                before_end: Callable[[], None] | None = None) -> Delivery:
        data = data() if callable(data) else data
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count += 1
        target = self.folder / outbox_name(recipient)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:  # whole file or none: never a torn message
            handle.write(data)
        if before_end is not None:
            before_end()
        os.replace(tmp, target)
        return Delivery(250, f"gespeichert als {target.name}", accepted=True)

    def close(self) -> None:
        pass


def outbox_name(recipient: str) -> str:
    """The .eml file name the outbox gives a recipient's message."""
    return re.sub(r"[^A-Za-z0-9@._+-]", "_", recipient)[:100] + ".eml"


def smtp_password(settings: SmtpSettings) -> str:
    """NEWSLETTER_SMTP_PASSWORD, else the output of password_command; never from the config file."""
    password = os.environ.get(PASSWORD_ENV, "")
    if password or not settings.username:
        return password
    if settings.password_command:
        try:
            result = subprocess.run(settings.password_command, shell=True, capture_output=True,  # noqa: S602 - the author's own command
                                    text=True, timeout=60, check=False)
        except subprocess.TimeoutExpired:
            raise TransportError("[smtp] password_command: keine Antwort nach 60 Sekunden") from None
        if result.returncode != 0 or not result.stdout.strip():
            raise TransportError(f"[smtp] password_command ist fehlgeschlagen (Exit-Code {result.returncode})")
        return result.stdout.strip()
    raise TransportError(f"SMTP-Passwort fehlt: bitte in der Umgebungsvariablen {PASSWORD_ENV} setzen "
                         "(oder [smtp] password_command angeben)")


def tls_context(settings: SmtpSettings, config_dir: Path) -> ssl.SSLContext:
    """Always verify certificates; a private CA can be added, never verification switched off."""
    context = ssl.create_default_context()
    if settings.tls_ca_file:
        ca = Path(settings.tls_ca_file).expanduser()
        context.load_verify_locations(cafile=str(ca if ca.is_absolute() else config_dir / ca))
    return context


class SmtpTransport:
    """One SMTP connection, opened lazily, reused for many messages, re-opened after a drop or 421."""

    def __init__(self, settings: SmtpSettings, password: str, config_dir: Path) -> None:
        self.settings = settings
        self.password = password
        self.context = tls_context(settings, config_dir)
        self.host, self.port = settings.host, settings.effective_port
        self.where = f"{self.host}:{self.port}"
        security = {"starttls": "STARTTLS", "ssl": "SSL/TLS", "none": "unverschlüsselt"}[settings.security]
        self.description = f"SMTP {self.where} ({security})"
        self.connection: smtplib.SMTP | None = None

    def _fail(self, what: str) -> TransportError:
        return TransportError(f"{self.where}: {what}")

    def connect(self) -> smtplib.SMTP:
        s = self.settings
        local = s.local_hostname or None
        try:
            if s.security == "ssl":
                conn: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, local_hostname=local,
                                                     timeout=s.timeout, context=self.context)
            else:
                conn = smtplib.SMTP(self.host, self.port, local_hostname=local, timeout=s.timeout)
            conn.ehlo()
            if s.security == "starttls":
                if not conn.has_extn("starttls"):
                    conn.close()
                    raise self._fail("der Server bietet kein STARTTLS an; ohne Verschlüsselung sende ich nicht")
                conn.starttls(context=self.context)
                conn.ehlo()
            if s.username:
                conn.login(s.username, self.password)
            # Commands, data and the final "." go out as separate writes: never hold one back
            # waiting for the server's acknowledgement of the last (Nagle's algorithm).
            assert conn.sock is not None  # connected and logged in just above
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except ssl.SSLCertVerificationError as exc:
            raise self._fail(f"TLS-Zertifikat nicht vertrauenswürdig ({exc.verify_message}); "
                             "für eine eigene CA [smtp] tls_ca_file setzen") from None
        except ssl.SSLError as exc:
            raise self._fail(f"TLS-Fehler ({exc.reason or exc})") from None
        except smtplib.SMTPAuthenticationError as exc:
            raise self._fail(f"Anmeldung abgelehnt ({exc.smtp_code} {_text(exc.smtp_error)}); "
                             "Benutzername und Passwort prüfen") from None
        except smtplib.SMTPConnectError as exc:
            if 400 <= exc.smtp_code < 500:  # "421 too many connections": busy, not broken
                raise _Busy(exc.smtp_code, _text(exc.smtp_error)) from None
            raise self._fail(f"Verbindung abgelehnt ({exc.smtp_code} {_text(exc.smtp_error)})") from None
        except smtplib.SMTPNotSupportedError:
            raise self._fail("der Server bietet keine Anmeldung (AUTH) an") from None
        except smtplib.SMTPException as exc:
            raise self._fail(f"SMTP-Fehler beim Verbinden ({exc})") from None
        except (OSError, TimeoutError) as exc:
            raise self._fail(f"keine Verbindung ({exc.strerror or exc})") from None
        self.connection = conn
        return conn

    def deliver(self, sender: str, recipient: str, data: Data,
                before_end: Callable[[], None] | None = None) -> Delivery:
        """MAIL, RCPT, DATA on the open connection; one reconnect if the server went away idle."""
        body = functools.cache(data) if callable(data) else lambda: data  # built once, even on a retry
        for attempt in (1, 2):
            try:
                conn = self.connection or self.connect()
            except _Busy as busy:
                return Delivery(busy.code, busy.reply, step="connect")
            try:
                return self._transaction(conn, sender, recipient, body, before_end)
            except _Disconnected as dropped:
                self._drop()
                if dropped.after_data:
                    return Delivery(0, "Verbindung nach dem Senden abgebrochen", maybe_delivered=True)
                if attempt == 2:  # a fresh connection fared no better
                    if dropped.code:
                        return Delivery(dropped.code, str(dropped), step="mail")
                    return Delivery(0, f"Verbindung abgebrochen ({dropped})")
        raise AssertionError("unreachable")  # pragma: no cover

    def _transaction(self, conn: smtplib.SMTP, sender: str, recipient: str, body: Callable[[], bytes],
                     before_end: Callable[[], None] | None) -> Delivery:
        """MAIL, RCPT and DATA; pipelined (RFC 2920) when the server offers it: two round trips, not four."""
        commands = (f"MAIL FROM:<{sender}>", f"RCPT TO:<{recipient}>", "DATA")
        expected = ((250,), (250, 251), (354,))
        replies: list[tuple[int, bytes]] = []
        try:
            if conn.has_extn("pipelining"):
                conn.send("".join(f"{command}\r\n" for command in commands))
                try:
                    body()  # built while the server answers
                except BaseException:
                    self._drop()  # its DATA may be accepted already: only closing ends it unsent
                    raise
                replies = [conn.getreply() for _ in commands]
            else:
                for command, wanted in zip(commands, expected, strict=True):
                    conn.send(f"{command}\r\n")
                    replies.append(conn.getreply())
                    if replies[-1][0] not in wanted:
                        break
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise _Disconnected(str(exc)) from None
        for (code, reply), wanted, step in zip(replies, expected, ("mail", "rcpt", "data"), strict=False):
            if code in wanted:
                continue
            if code == 421 and step == "mail":  # closing this connection: try a fresh one first
                raise _Disconnected(_text(reply), code=code)
            self._abandon(conn, replies)
            delivery = Delivery(code, _text(reply), step=step)
            if code == 421:
                self._drop()
            if delivery.sender_refused:
                raise self._fail(f"Absender {sender} abgelehnt ({code} {delivery.reply})")
            return delivery
        try:
            data = body()  # already built when pipelined
        except BaseException:
            self._drop()  # after DATA's 354 only closing ends the message unsent
            raise
        try:
            conn.send(_dot_stuffed(data))
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise _Disconnected(str(exc)) from None  # without the final "." no server delivers it
        if before_end is not None:
            try:
                before_end()  # while the server reads the data
            except BaseException:
                self._drop()  # mid-DATA: this connection cannot carry another message
                raise
        try:
            conn.send(b".\r\n")
            code, reply = conn.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            # The message may have reached the server: never count it as safe to resend.
            raise _Disconnected(str(exc), after_data=True) from None
        if code == 421:
            self._drop()
        return Delivery(code, _text(reply), accepted=code == 250)

    def _abandon(self, conn: smtplib.SMTP, replies: list[tuple[int, bytes]]) -> None:
        """End a failed transaction; a pipelined DATA the server accepted anyway gets an empty body."""
        try:
            if len(replies) == 3 and replies[2][0] == 354:
                conn.send(b".\r\n")
                conn.getreply()
            conn.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(OSError):
                self.connection.close()
        self.connection = None

    def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self.connection.quit()
        self._drop()


class _Busy(Exception):
    def __init__(self, code: int, reply: str) -> None:
        super().__init__(reply)
        self.code, self.reply = code, reply


class _Disconnected(Exception):
    def __init__(self, message: str, after_data: bool = False, code: int = 0) -> None:
        super().__init__(message)
        self.after_data = after_data
        self.code = code


def _dot_stuffed(data: bytes) -> bytes:
    """SMTP transparency (RFC 5321 4.5.2): a line starting with "." gets a second one; data ends in CRLF."""
    # Our messages end every line in CRLF, so a plain replace does what smtplib's regex does, faster.
    data = data.replace(b"\n.", b"\n..")
    if data.startswith(b"."):
        data = b"." + data
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def _text(reply: bytes | str) -> str:
    return (reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply).replace("\n", " ")


def make_transport(settings: SmtpSettings, outbox: Path, config_dir: Path, password: str | None = None) -> Transport:
    """SMTP when a host is configured, else the outbox. Pass `password` to ask for it only once."""
    if not settings.host:
        return OutboxTransport(outbox)
    return SmtpTransport(settings, smtp_password(settings) if password is None else password, config_dir)
