"""A real IMAP server for tests: Dovecot on 127.0.0.1, a free port, its own config and user.

Dovecot's login processes refuse to run as root, so its mail is owned by `nobody` and its
folder lives in a world-traversable temp dir (pytest's own is private to root). With a test
CA's certificate it offers STARTTLS on the plain port and implicit TLS on a second one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import trustme

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER, PASSWORD = "mira", "postfach-geheim"

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/run/state
protocols = imap
listen = 127.0.0.1
ssl = {ssl}
{certs}
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = {root}/log/dovecot.log
mail_location = maildir:{root}/mail/%u
default_internal_user = dovecot
default_login_user = dovenull
default_internal_group = dovecot
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {ssl_port}
  }}
}}
service anvil {{
  chroot =
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={root}/mail/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
first_valid_uid = 1
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def available() -> bool:
    return Path(DOVECOT).exists() and os.geteuid() == 0


class ImapServer:
    """Dovecot with one user (mira); `maildir` is where her mail lies on disk."""

    def __init__(self, ca: trustme.CA | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="newsletter-dovecot-"))
        self.root.chmod(0o755)
        self.port, self.ssl_port = free_port(), free_port() if ca else 0
        for folder in ("run", "log", "mail"):
            (self.root / folder).mkdir()
        self.maildir = self.root / "mail" / USER
        self.maildir.mkdir()
        shutil.chown(self.root / "mail", "nobody", "nogroup")
        shutil.chown(self.maildir, "nobody", "nogroup")
        (self.root / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        certs = ""
        if ca is not None:
            cert = ca.issue_cert("127.0.0.1", "localhost")
            cert.private_key_and_cert_chain_pem.write_to_path(str(self.root / "server.pem"))
            certs = f"ssl_cert = <{self.root}/server.pem\nssl_key = <{self.root}/server.pem"
        self.config = self.root / "dovecot.conf"
        self.config.write_text(CONFIG.format(root=self.root, port=self.port, ssl_port=self.ssl_port,
                                             ssl="yes" if ca else "no", certs=certs))

    def start(self) -> ImapServer:
        # Dovecot forks into the background: its output goes to a file, or run() would wait for it
        with (self.root / "log" / "start.log").open("wb") as log:
            subprocess.run([DOVECOT, "-c", str(self.config)], check=True, stdout=log, stderr=log,
                           stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as sock:
                if sock.recv(100).startswith(b"* OK"):
                    return self
            if time.monotonic() > deadline:
                log = self.root / "log" / "dovecot.log"
                raise RuntimeError(f"dovecot did not start: {log.read_text() if log.exists() else ''}")
            time.sleep(0.05)

    def stop(self) -> None:
        pid_file = self.root / "run" / "master.pid"
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            pid = int(pid_file.read_text())
            os.kill(pid, 15)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.05)
        shutil.rmtree(self.root, ignore_errors=True)

    def client(self):
        from imapclient import IMAPClient

        client = IMAPClient("127.0.0.1", self.port, ssl=False)
        client.login(USER, PASSWORD)
        return client

    def append(self, *messages: bytes, folder: str = "INBOX") -> None:
        """Deliver mails as a mail program would store them: IMAP APPEND."""
        client = self.client()
        try:
            for message in messages:
                client.append(folder, message)
        finally:
            client.logout()

    def folders(self) -> dict[str, int]:
        """Every folder and how many mails it holds (\\Deleted ones included: nothing may vanish)."""
        client = self.client()
        try:
            return {name: client.folder_status(name, ["MESSAGES"])[b"MESSAGES"]
                    for _, _, name in client.list_folders()}
        finally:
            client.logout()
