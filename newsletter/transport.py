"""Transports: SMTP (one verified, reused connection) or the outbox folder (.eml files).

`deliver` returns the server's `Reply` and the step it came at; what a reply means for the send
is decided in `replies.py`, not here. Problems no message can get past (login, TLS, an
unreachable server) raise TransportError naming host:port.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import select
import smtplib
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from newsletter.config import ImapSettings, SmtpSettings
from newsletter.errors import TransportError
from newsletter.replies import Reply, Step

PASSWORD_ENV = "NEWSLETTER_SMTP_PASSWORD"  # noqa: S105 - the variable's name, not a password


Data = bytes | Callable[[], bytes]  # the message, or how to build it while the server answers MAIL/RCPT


class Transport(Protocol):
    """`deliver` calls `before_end` once before the message is complete (the final "." or the
    outbox file's rename), where it would wait anyway: while a distant server answers pipelined
    MAIL, RCPT and DATA, else while the server reads the data. A send journal makes its state
    durable then (an fsync).
    `envid` names the message in delivery status notifications (RFC 3461) where the server
    offers them, so a bounce that comes back later can be matched to its journal row."""

    description: str
    where: str  # what an error message names: host:port, or the outbox folder

    def deliver(self, sender: str, recipient: str, data: Data,
                before_end: Callable[[], None] | None = None, envid: str = "") -> Reply: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 trace: TracebackType | None) -> None: ...


class _Closing:
    """`with transport:` closes it, however the block ends."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


class OutboxTransport(_Closing):
    """Writes each message as an .eml file; the default until an SMTP host is configured."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.where = str(folder)
        self.description = f"Postausgang {folder}"
        self.count = 0

    def deliver(self, sender: str, recipient: str, data: Data,
                before_end: Callable[[], None] | None = None, envid: str = "") -> Reply:
        data = data() if callable(data) else data
        target = self.folder / outbox_name(recipient)
        tmp = ""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:  # whole file or none: never a torn message
                handle.write(data)
        except OSError as exc:
            with contextlib.suppress(OSError):
                if tmp:
                    Path(tmp).unlink()
            raise TransportError(f"Postausgang {self.folder}: kann nicht schreiben ({exc.strerror or exc})") from None
        self.count += 1
        if before_end is not None:
            before_end()
        os.replace(tmp, target)
        return Reply(250, f"gespeichert als {target.name}", Step.END)

    def close(self) -> None:
        pass


def outbox_name(recipient: str) -> str:
    """The .eml file name the outbox gives a recipient's message."""
    return re.sub(r"[^A-Za-z0-9@._+-]", "_", recipient)[:100] + ".eml"


def smtp_password(settings: SmtpSettings) -> str:
    """NEWSLETTER_SMTP_PASSWORD, else the output of password_command; never from the config file."""
    return ask_password(PASSWORD_ENV, settings.password_command, "smtp", needed=bool(settings.username))


def ask_password(variable: str, command: str, section: str, needed: bool = True) -> str:
    """A password from the environment, else from the author's own command (a keyring, `pass`)."""
    password = os.environ.get(variable, "")
    if password or not needed:
        return password
    if command:
        try:
            result = subprocess.run(command, shell=True, capture_output=True,  # noqa: S602 - the author's own command
                                    text=True, timeout=60, check=False)
        except subprocess.TimeoutExpired:
            raise TransportError(f"[{section}] password_command: keine Antwort nach 60 Sekunden") from None
        if result.returncode != 0 or not result.stdout.strip():
            raise TransportError(f"[{section}] password_command ist fehlgeschlagen (Exit-Code {result.returncode})")
        return result.stdout.strip()
    what = "SMTP" if section == "smtp" else "Postfach"
    raise TransportError(f"{what}-Passwort fehlt: bitte in der Umgebungsvariablen {variable} setzen "
                         f"(oder [{section}] password_command angeben)")


def tls_context(settings: SmtpSettings | ImapSettings, config_dir: Path) -> ssl.SSLContext:
    """Always verify certificates, never switched off. A private CA (`tls_ca_file`) is the one
    trusted for that server, as with curl's --cacert: the system's hundred-odd CAs are not
    loaded then (20-50 ms each time)."""
    if not settings.tls_ca_file:
        return ssl.create_default_context()
    ca = Path(settings.tls_ca_file).expanduser()
    return ssl.create_default_context(cafile=str(ca if ca.is_absolute() else config_dir / ca))


class SmtpTransport(_Closing):
    """One SMTP connection, opened lazily, reused for many messages, re-opened after a drop or 421."""

    def __init__(self, settings: SmtpSettings, password: str, config_dir: Path) -> None:
        self.settings = settings
        self.password = password
        # Loading the system's CA certificates takes 20-50 ms per connection: not for a plain one.
        self.context = tls_context(settings, config_dir) if settings.security != "none" else None
        self.host, self.port = settings.host, settings.effective_port
        self.where = f"{self.host}:{self.port}"
        security = {"starttls": "STARTTLS", "ssl": "SSL/TLS", "none": "unverschlüsselt"}[settings.security]
        self.description = f"SMTP {self.where} ({security})"
        self.connection: smtplib.SMTP | None = None
        self.reused = False  # the open connection has carried a message already

    def _fail(self, what: str) -> TransportError:
        return TransportError(f"{self.where}: {what}")

    def connect(self, sender: str = "") -> smtplib.SMTP:
        """Connect, STARTTLS, log in. EHLO names the sender's domain (or [smtp] local_hostname):
        smtplib's own fallback is this computer's name or "[127.0.0.1]", which spam filters hold
        against a sender."""
        s = self.settings
        local = s.local_hostname or sender.rpartition("@")[2] or None
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
                raise _Refused(Reply(exc.smtp_code, _text(exc.smtp_error), Step.CONNECT)) from None
            raise self._fail(f"Verbindung abgelehnt ({exc.smtp_code} {_text(exc.smtp_error)})") from None
        except smtplib.SMTPNotSupportedError:
            raise self._fail("der Server bietet keine Anmeldung (AUTH) an") from None
        except smtplib.SMTPServerDisconnected as exc:
            raise _Refused(Reply(0, f"Verbindung beim Anmelden abgebrochen ({exc})", Step.CONNECT)) from None
        except smtplib.SMTPException as exc:
            raise self._fail(f"SMTP-Fehler beim Verbinden ({exc})") from None
        except (OSError, TimeoutError) as exc:
            raise self._fail(f"keine Verbindung ({exc.strerror or exc}). Stimmen host und port?") from None
        self.connection, self.reused = conn, False
        return conn

    def probe(self, sender: str) -> None:
        """Connect, STARTTLS, log in and QUIT, as a send would begin: proves the way out."""
        try:
            self.connect(sender)
        except _Refused as refused:
            raise self._fail(f"der Server nimmt gerade nichts an ({refused.reply})") from None
        self.close()

    def deliver(self, sender: str, recipient: str, data: Data,
                before_end: Callable[[], None] | None = None, envid: str = "") -> Reply:
        """MAIL, RCPT, DATA on the open connection.

        A connection that has carried a message before may have been closed by the server while
        idle (a drop, or a 421 at the next command): then once more on a fresh one. On a fresh
        connection the server's answer stands, whatever it is.
        """
        body = functools.cache(data) if callable(data) else lambda: data  # built once, even on a retry
        while True:
            try:
                conn = self.connection or self.connect(sender)
            except _Refused as refused:
                return refused.reply
            reused = self.reused
            try:
                reply = self._transaction(conn, sender, recipient, body, before_end, envid)
            except _Refused as refused:
                self._drop()
                if reused and refused.reply.step is not Step.END:
                    continue
                return refused.reply
            self.reused = True
            return reply

    def _transaction(self, conn: smtplib.SMTP, sender: str, recipient: str, body: Callable[[], bytes],
                     before_end: Callable[[], None] | None, envid: str) -> Reply:
        """MAIL, RCPT and DATA; pipelined (RFC 2920) when the server offers it: two round trips, not four.
        The message is built while the server answers them, and `before_end` called then too
        unless the answers are already there.

        A server that answers 421 and hangs up (Postfix and providers do, when they throttle)
        leaves the replies after the 421 unread: the 421 is what counts, not the lost connection.
        """
        mail, rcpt = f"MAIL FROM:<{sender}>", f"RCPT TO:<{recipient}>"
        if envid and conn.has_extn("dsn"):  # bounces come back with this id and only the headers
            mail, rcpt = f"{mail} RET=HDRS ENVID={_xtext(envid)}", f"{rcpt} NOTIFY=FAILURE,DELAY"
        commands = (mail, rcpt, "DATA")
        steps, expected = (Step.MAIL, Step.RCPT, Step.DATA), ((250,), (250, 251), (354,))
        replies: list[Reply] = []
        try:
            if conn.has_extn("pipelining"):
                conn.send("".join(f"{command}\r\n" for command in commands))
                try:
                    body()  # built while the server answers
                    if before_end is not None and not _answered(conn):
                        before_end()  # a distant server: its answers take longer than the fsync
                        before_end = None
                except BaseException:
                    self._drop()  # its DATA may be accepted already: only closing ends it unsent
                    raise
                for step in steps:
                    replies.append(_reply(conn.getreply(), step))
            else:
                for command, wanted, step in zip(commands, expected, steps, strict=True):
                    conn.send(f"{command}\r\n")
                    replies.append(_reply(conn.getreply(), step))
                    if replies[-1].code not in wanted:
                        break
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            refusal = next((r for r, wanted in zip(replies, expected, strict=False) if r.code not in wanted), None)
            step = steps[len(replies)] if len(replies) < len(steps) else Step.DATA
            raise _Refused(refusal or Reply(0, f"Verbindung abgebrochen ({exc})", step)) from None
        for reply, wanted in zip(replies, expected, strict=False):
            if reply.code in wanted:
                continue
            if reply.code == 421:
                raise _Refused(reply)  # the server closes this connection after saying so
            self._abandon(conn, replies)
            return reply
        try:
            data = body()  # already built when pipelined
        except BaseException:
            self._drop()  # after DATA's 354 only closing ends the message unsent
            raise
        try:  # nothing left to do before the final ".": it goes with the data, in one write
            conn.send(_dot_stuffed(data) + (b".\r\n" if before_end is None else b""))
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            # Without the whole final "\r\n.\r\n" (the last bytes, so a failed write lacks them) no server delivers it.
            raise _Refused(Reply(0, f"Verbindung abgebrochen ({exc})", Step.DATA)) from None
        if before_end is not None:
            try:
                before_end()  # a near server: while it reads the data
            except BaseException:
                self._drop()  # mid-DATA: this connection cannot carry another message
                raise
        try:
            if before_end is not None:
                conn.send(b".\r\n")
            reply = _reply(conn.getreply(), Step.END)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            # The message may have reached the server: never count it as safe to resend.
            raise _Refused(Reply(0, f"Verbindung nach dem Senden abgebrochen ({exc})", Step.END)) from None
        if reply.code == 421:
            self._drop()
        return reply

    def _abandon(self, conn: smtplib.SMTP, replies: list[Reply]) -> None:
        """End a failed transaction; a pipelined DATA the server accepted anyway gets an empty body."""
        try:
            if len(replies) == 3 and replies[2].code == 354:
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


class _Refused(Exception):
    """A reply that ends the transaction and its connection (a 421, a drop)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def _reply(answer: tuple[int, bytes], step: Step) -> Reply:
    return Reply(answer[0], _text(answer[1]), step)


def _answered(conn: smtplib.SMTP) -> bool:
    """Have the server's answers arrived already (a server close by), or are they still on their way?"""
    sock = conn.sock
    if sock is None:
        return True
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    return bool(select.select([sock], [], [], 0)[0])


XTEXT_PLAIN = re.compile(r"[!-*,-<>-~]*")  # printable ASCII but "+" and "=": as it is


def _xtext(value: str) -> str:
    """RFC 3461 xtext: printable ASCII except "+" and "=", everything else as +XX."""
    if XTEXT_PLAIN.fullmatch(value):
        return value
    return "".join(c if "!" <= c <= "~" and c not in "+=" else f"+{ord(c):02X}" for c in value)


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
