"""A real Postfix for tests: a private instance on a free loopback port that accepts every
recipient and bounces the unknown ones later, delivering its DSN into a maildir (the author's
Dovecot mailbox). That is what a real submission server does: a dead address comes back hours
later as a bounce mail, not at RCPT.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mail.praxis.example.org
mydomain = praxis.example.org
mydestination =
mynetworks = 127.0.0.0/8
relayhost =
smtpd_reject_unlisted_recipient = no
virtual_mailbox_domains = praxis.example.org, leser.example
virtual_mailbox_base = {maildirs}
virtual_mailbox_maps = texthash:{root}/conf/mailboxes
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
maillog_file_prefixes = /tmp
maillog_file = {root}/postfix.log
smtputf8_enable = no
"""
SERVICES = """\
{port} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
virtual unix - n n - - virtual
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


def available() -> bool:
    return Path(POSTFIX).exists()


class PostfixServer:
    """Postfix on 127.0.0.1:port; mail to `mailboxes` (address → maildir below `maildirs`) is kept,
    mail to any other address at leser.example bounces back to its sender."""

    def __init__(self, root: Path, maildirs: Path, mailboxes: dict[str, str]) -> None:
        self.root = root
        root.mkdir(parents=True)
        root.chmod(0o755)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        for folder in ("conf", "queue", "data"):
            (root / folder).mkdir()
        shutil.chown(root / "data", "postfix")
        (root / "conf" / "main.cf").write_text(MAIN_CF.format(root=root, maildirs=maildirs))
        (root / "conf" / "master.cf").write_text(SERVICES.format(port=f"127.0.0.1:{self.port}"))
        (root / "conf" / "mailboxes").write_text("".join(f"{a} {m}\n" for a, m in mailboxes.items()))

    def start(self) -> PostfixServer:
        with (self.root / "start.log").open("wb") as output:  # master forks: a pipe would never close
            result = subprocess.run([POSTFIX, "-c", str(self.root / "conf"), "start"], stdout=output,
                                    stderr=output, stdin=subprocess.DEVNULL, timeout=60, check=False)
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as sock:
                if sock.recv(100).startswith(b"220"):
                    return self
            if time.monotonic() > deadline:
                log = self.root / "postfix.log"
                raise RuntimeError(f"postfix did not start ({result.returncode}): "
                                   f"{(log if log.exists() else self.root / 'start.log').read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        subprocess.run([POSTFIX, "-c", str(self.root / "conf"), "stop"], capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=60, check=False)
