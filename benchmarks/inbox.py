"""Benchmark `newsletter inbox` against the floor: a bare IMAPClient fetch of the same mails.

    python benchmarks/inbox.py                 # 2,000 mixed mails, median of 3
    python benchmarks/inbox.py --count 5000 --repeat 5

A real Dovecot on 127.0.0.1 (started from the tests' fixture, STARTTLS with a test CA) holds N
mails as a real mailbox after a send would: bounces (Postfix, Gmail, Exim, Exchange), mailto
unsubscribes, complaints, out-of-office replies, readers' replies and unrelated mail. Each run
gets a fresh Dovecot with the same mails (filled by IMAP APPEND, not timed).

- ours:  `newsletter inbox` as the author runs it, in a copy of the example workspace whose
         journal holds a real send to 500 people (to the outbox): start-up, login, fetch, sort,
         the journal and subscriber changes, the moves into Newsletter/… folders, the state.
- floor: the same login, `UID SEARCH` and one `FETCH BODY.PEEK[]` per 50 mails with IMAPClient,
         and nothing else: what reading the mails costs at all (ours asks for their size too).
- parsed: the floor with each mail read by the standard library's MIME parser in the same
         process, the least any sorting of the mails by their parts does (shown for scale).

Needs Debian's dovecot-imapd and root (Dovecot's own users). Never run by the tests.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import trustme  # noqa: E402 - after the path is set
from imap_server import PASSWORD, USER, ImapServer  # noqa: E402
from mail_samples import (  # noqa: E402
    arf_complaint,
    exchange_dsn,
    exim_bounce,
    gmail_dsn,
    human_reply,
    mailto_unsubscribe,
    out_of_office,
    postfix_dsn,
    unrelated,
)

from newsletter.journal import SendJournal, journal_path  # noqa: E402
from newsletter.subscribers import SubscriberStore  # noqa: E402
from newsletter.tokens import make_token  # noqa: E402
from newsletter.workspace import Workspace  # noqa: E402

ISSUE = "issues/2026-12-innehalten.md"
PEOPLE = 500


def workspace(root: Path, ca: trustme.CA) -> tuple[Workspace, dict[str, str]]:
    """The example workspace with PEOPLE subscribers, after a real send to the outbox."""
    root.mkdir(parents=True)
    for part in ("newsletter.toml", "issues", "templates"):
        source = REPO / part
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, root / part)
    with SubscriberStore(root / "subscribers" / "subscribers.toml").change() as people:
        for n in range(PEOPLE):
            people.add(f"leserin.{n:04d}@example.org", "Leserin", status="active", source="benchmark")
    env = clean_env(root)
    subprocess.run([sys.executable, "-m", "newsletter", "send", ISSUE, "--yes", "--skip-inbox"], cwd=root,
                   env=env, check=True, capture_output=True)
    ws = Workspace(root)
    with SendJournal(journal_path(ws.journal_dir, "2026-12-innehalten")) as journal:
        ids = {row.email: row.message_id or "" for row in journal.rows(["sent"])}
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    return ws, ids


def point_at(ws: Workspace, server: ImapServer) -> None:
    config = ws.root / "newsletter.toml"
    text = config.read_text().split("\n[imap]\n")[0]
    config.write_text(text + f'\n[imap]\nhost = "127.0.0.1"\nport = {server.port}\nsecurity = "starttls"\n'
                             f'username = "{USER}"\ntls_ca_file = "ca.pem"\n')


def mails(ws: Workspace, ids: dict[str, str], count: int) -> list[bytes]:
    secret = ws.secret()
    people = SubscriberStore(ws.subscribers_path).load()
    rng = random.Random(3)
    addresses = sorted(ids)
    out = []
    for n in range(count):
        address = rng.choice(addresses)
        message_id = ids[address]
        kind = rng.choices(range(9), weights=(4, 2, 1, 1, 1, 1, 1, 2, 3))[0]
        token = make_token(secret, people.require(address).id)
        mail = (postfix_dsn(address, message_id, envid=message_id.strip("<>").partition("@")[0]) if kind == 0
                else gmail_dsn(address, message_id) if kind == 1
                else exim_bounce(address, message_id) if kind == 2
                else exchange_dsn(address, message_id) if kind == 3
                else mailto_unsubscribe(f"x{n}@anders.example", token) if kind == 4
                else arf_complaint(address, message_id) if kind == 5
                else out_of_office(address, message_id) if kind == 6
                else human_reply(address, message_id) if kind == 7
                else unrelated(n))
        out.append(mail.replace(b"Message-ID: <", f"Message-ID: <{n}.".encode(), 1))
    return out


def clean_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(PYTHONPATH=str(REPO), NEWSLETTER_WORKSPACE=str(root), NEWSLETTER_IMAP_PASSWORD=PASSWORD)
    return env


def fresh_server(ca: trustme.CA, messages: list[bytes]) -> ImapServer:
    server = ImapServer(ca).start()
    client = server.client()
    try:
        for message in messages:
            client.append("INBOX", message)
    finally:
        client.logout()
    return server


def run_ours(ws: Workspace, ca: trustme.CA, messages: list[bytes], pristine: Path) -> float:
    shutil.rmtree(ws.state_dir / "inbox.sqlite", ignore_errors=True)
    for name in ("inbox.sqlite", "inbox.sqlite-wal", "inbox.sqlite-shm"):
        (ws.state_dir / name).unlink(missing_ok=True)
    shutil.copytree(pristine / "journal", ws.journal_dir, dirs_exist_ok=True)
    shutil.copy2(pristine / "subscribers.toml", ws.subscribers_path)
    server = fresh_server(ca, messages)
    try:
        point_at(ws, server)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "newsletter", "inbox", "--json"], cwd=ws.root,
                                env=clean_env(ws.root), capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"newsletter inbox failed: {result.stderr}")
        folders = server.folders()
        if sum(folders.values()) != len(messages):
            raise SystemExit(f"mails lost: {folders}")
    finally:
        server.stop()
    return seconds


FLOOR = r"""
import email, ssl, sys, time
from imapclient import IMAPClient
port, ca, parse = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "parse"
started = time.perf_counter()
context = ssl.create_default_context(cafile=ca)
client = IMAPClient("127.0.0.1", port, ssl=False, timeout=60)
client.starttls(context)
client.login("mira", "postfach-geheim")
client.select_folder("INBOX")
uids = client.search(["UID", "1:*"])
size = 0
for start in range(0, len(uids), 50):
    for data in client.fetch(uids[start:start + 50], ["BODY.PEEK[]"]).values():
        size += len(data[b"BODY[]"])
        if parse:
            email.message_from_bytes(data[b"BODY[]"])
client.logout()
print(len(uids), size, time.perf_counter() - started)
"""


def run_floor(ca_path: Path, ca: trustme.CA, messages: list[bytes], parse: bool = False) -> float:
    """The bare fetch; with `parse`, each mail also read by the standard library's MIME parser."""
    server = fresh_server(ca, messages)
    try:
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", FLOOR, str(server.port), str(ca_path),
                                 "parse" if parse else "fetch"],
                                capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - started
        if int(result.stdout.split()[0]) != len(messages):
            raise SystemExit(f"the floor fetched {result.stdout.split()[0]} mails")
    finally:
        server.stop()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0 or not Path("/usr/sbin/dovecot").exists():
        raise SystemExit("needs Debian's dovecot-imapd and root")
    folder = Path(tempfile.mkdtemp(prefix="newsletter-inbox-bench-"))
    try:
        ca = trustme.CA()
        ws, ids = workspace(folder / "workspace", ca)
        pristine = folder / "pristine"
        shutil.copytree(ws.journal_dir, pristine / "journal")
        shutil.copy2(ws.subscribers_path, pristine / "subscribers.toml")
        messages = mails(ws, ids, args.count)
        megabytes = sum(map(len, messages)) / 1e6
        print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {args.count:,} mails ({megabytes:.1f} MB) "
              f"in Dovecot on 127.0.0.1 (STARTTLS); {PEOPLE} people in the journal")
        ours, floor, parsed = [], [], []
        for _ in range(args.repeat):  # interleaved, so a noisy moment does not hit one side only
            ours.append(run_ours(ws, ca, messages, pristine))
            floor.append(run_floor(ws.root / "ca.pem", ca, messages))
            parsed.append(run_floor(ws.root / "ca.pem", ca, messages, parse=True))
        o, f, fp = statistics.median(ours), statistics.median(floor), statistics.median(parsed)
        print()
        print("| | seconds | mails/s | runs (mails/s) |")
        print("|---|---:|---:|---|")
        for name, value, runs in (("newsletter inbox, end to end", o, ours),
                                  ("bare IMAPClient fetch (floor)", f, floor),
                                  ("the same, each mail parsed by `email` (one process)", fp, parsed)):
            spread = ", ".join(f"{args.count / r:,.0f}" for r in sorted(runs))
            print(f"| {name} | {value:.2f} | {args.count / value:,.0f} | {spread} |")
        ratio = f / o
        print(f"\nours / floor: {ratio:.0%} (target ≥ 50 %: {'met' if ratio >= 0.5 else 'MISSED'})")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
