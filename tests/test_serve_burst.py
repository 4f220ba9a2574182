"""`newsletter serve` under the burst that follows a send, and against a timing probe.

The real command in its own process on a loopback port, a list of 20,000 people, one-click
unsubscribes from 16 clients at once (URL-encoded and multipart, as Gmail sends them) while a
`subscribers import` runs in a third process, and a SIGKILL of the server in the middle.
"""

from __future__ import annotations

import http.client
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from smtp_server import free_port
from web_server import WebServer

from newsletter.changes import ChangeLog
from newsletter.subscribers import ACTIVE, PENDING, UNSUBSCRIBED, SubscriberList, parse_subscribers
from newsletter.tokens import make_token
from newsletter.workspace import Workspace

PEOPLE = 20_000
CLICKS = 300


def write_list(ws: Workspace, count: int) -> SubscriberList:
    """`count` active people written as `newsletter` writes them (built directly: validating 20,000
    addresses one by one would only measure email-validator)."""
    people = SubscriberList()
    for index in range(count):
        people.add(f"leser{index}@example.org", f"Leser {index}", status=ACTIVE, source="test")
    ws.subscribers_path.parent.mkdir(parents=True, exist_ok=True)
    ws.subscribers_path.write_text(people.to_toml(), encoding="utf-8")
    return people


class Server:
    """`python -m newsletter serve` in its own process."""

    def __init__(self, ws: Workspace, port: int) -> None:
        self.ws, self.port = ws, port
        self.process = subprocess.Popen([sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
                                        cwd=ws.root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while not self.healthy():
            assert self.process.poll() is None, self.process.stderr.read().decode() if self.process.stderr else ""
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.05)

    def healthy(self) -> bool:
        try:
            return request(self.port, "GET", "/healthz")[0] == 200
        except OSError:
            return False

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        """Ctrl-C: what was answered is written before the process ends."""
        self.process.send_signal(signal.SIGINT)
        assert self.process.wait(timeout=60) == 0


def request(port: int, method: str, path: str, body: bytes = b"",
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body or None, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def one_click(port: int, token: str, multipart: bool) -> int:
    if multipart:  # as Gmail posts it
        boundary = "----gmail-one-click"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\n"
                f"One-Click\r\n--{boundary}--\r\n").encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    else:
        body, headers = b"List-Unsubscribe=One-Click", {"Content-Type": "application/x-www-form-urlencoded"}
    return request(port, "POST", f"/u/{token}", body, headers)[0]


@pytest.fixture
def servers(ws: Workspace) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.kill()


def test_burst_of_unsubscribes_with_an_import_and_a_kill(ws: Workspace, servers: list[Server],
                                                          tmp_path: Path) -> None:
    people = write_list(ws, PEOPLE)
    secret = ws.secret()
    leaving = [person.id for person in people.subscribers[::PEOPLE // CLICKS]][:CLICKS]
    csv = tmp_path / "neu.csv"
    csv.write_text("E-Mail-Adresse;Vorname\n" + "".join(f"neu{i}@example.org;Neu{i}\n" for i in range(2_000)),
                   encoding="utf-8")
    port = free_port()
    servers.append(Server(ws, port))
    importer = subprocess.Popen([sys.executable, "-m", "newsletter", "subscribers", "import", str(csv)],
                                cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    answered: dict[str, int] = {}
    before_kill: set[str] = set()
    lock = threading.Lock()
    kill_now = threading.Event()

    def click(index: int) -> None:
        subscriber_id = leaving[index]
        deadline = time.monotonic() + 120
        while True:
            try:
                status = one_click(port, make_token(secret, subscriber_id), multipart=index % 2 == 1)
                break
            except (OSError, http.client.HTTPException):  # killed, maybe mid-answer: a client tries again
                assert time.monotonic() < deadline
                time.sleep(0.05)
        with lock:
            answered[subscriber_id] = status
            if len(answered) == CLICKS // 3:
                kill_now.set()

    def killer() -> None:
        kill_now.wait(timeout=120)
        servers[-1].kill()  # in the middle of the burst, requests in flight
        with lock:
            before_kill.update(answered)
        parse_subscribers(ws.subscribers_path, ws.subscribers_path.read_bytes())  # still a whole file
        ChangeLog(ws.state_dir / "changes.sqlite").pending()                      # and a readable log
        servers.append(Server(ws, port))

    restart = threading.Thread(target=killer)
    restart.start()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(click, range(CLICKS)))
    restart.join()
    _, err = importer.communicate(timeout=300)
    assert importer.returncode == 0, err.decode()
    servers[-1].stop()

    assert set(answered) == set(leaving) and set(answered.values()) == {200}
    assert len(before_kill) >= CLICKS // 3 and len(servers) == 2  # answered by the server that was killed
    final = parse_subscribers(ws.subscribers_path, ws.subscribers_path.read_bytes())  # the file alone
    assert {p.id for p in final if p.status == UNSUBSCRIBED} == set(leaving)
    assert all(p.status == ACTIVE for p in final if p.email.startswith("leser") and p.id not in set(leaving))
    assert sum(1 for p in final if p.email.startswith("neu") and p.status == PENDING) == 2_000
    assert len(final) == PEOPLE + 2_000
    assert all(e.source == "Abmeldelink" for p in final if p.id in set(leaving)
               for e in p.events if e.kind == "unsubscribed")
    log = ChangeLog(ws.state_dir / "changes.sqlite")
    assert log.pending() == [] and log.mails_due() == []  # applied, and nothing waits
    assert ws.subscribers_path.stat().st_mode & 0o777 == 0o600


KINDS = ("new", "pending", "active", "unsubscribed", "erased")


def probe(kind: str, index: int) -> str:
    """Addresses of one shape and length for every kind: only the state differs."""
    return f"{kind[:2]}{index:04d}@example.org"


def test_sign_up_takes_as_long_whoever_is_listed(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Interleaved sign-ups for new, pending, active, unsubscribed and erased addresses at 5,000
    people: the medians within 10 %, the 5–95 % ranges overlapping, the answers identical."""
    people = SubscriberList()
    rounds = 300
    for index in range(5_000):
        people.add(f"leser{index}@example.org", status=ACTIVE, source="test")
    for index in range(rounds):
        people.add(probe("pending", index), status=PENDING, source="test")
        people.add(probe("active", index), status=ACTIVE, source="test")
        people.add(probe("unsubscribed", index), status=UNSUBSCRIBED, source="test")
        people.add(probe("erased", index), status=ACTIVE, source="test")
        people.forget(probe("erased", index))
    ws.subscribers_path.parent.mkdir(parents=True, exist_ok=True)
    ws.subscribers_path.write_text(people.to_toml(), encoding="utf-8")
    config = ws.root / "newsletter.toml"
    config.write_text(config.read_text() + "\n[web]\nsignups_per_hour = 100000\n")
    ws.__dict__.pop("config", None)
    web = WebServer(ws).start()
    # The writer thread is stopped and the log is applied once at the end: nothing runs in the
    # background while a probe is timed, so one probe's aftermath never lands in another's time.
    web.app.signups.close()
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    bodies: set[bytes] = set()
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=30)
    try:
        shuffle = random.Random(15)
        for index in range(rounds):
            for kind in shuffle.sample(KINDS, len(KINDS)):  # a new order each round
                body = f"email={probe(kind, index)}&consent=yes&website=".encode()
                started = time.perf_counter()
                connection.request("POST", "/subscribe", body=body,
                                   headers={"Content-Type": "application/x-www-form-urlencoded"})
                response = connection.getresponse()
                bodies.add(response.read())
                times[kind].append(time.perf_counter() - started)
                assert response.status == 200
    finally:
        connection.close()
        web.app.signups.settle()
        web.stop()
    assert len(bodies) == 1
    # Each probe against the median of its own round: the disk's fsync time drifts over seconds
    # (other processes on the machine), and a round's five probes share the same moment.
    typical = [statistics.median(times[kind][index] for kind in KINDS) for index in range(rounds)]
    medians = {kind: statistics.median(value / typical[index] for index, value in enumerate(values))
               for kind, values in times.items()}
    assert max(medians.values()) < 1.10 * min(medians.values()), (medians, {
        kind: statistics.median(values) for kind, values in times.items()})
    ranges = {kind: statistics.quantiles(values, n=20) for kind, values in times.items()}
    low = max(r[0] for r in ranges.values())    # the highest 5 % point
    high = min(r[-1] for r in ranges.values())  # the lowest 95 % point
    assert low < high, ranges
    # And the decisions were still taken, after the answers: only the new and pending got a link.
    after = ws.store().load()
    assert after.get(probe("new", 0)).status == PENDING
    assert after.get(probe("unsubscribed", 0)).status == UNSUBSCRIBED
    assert after.get(probe("erased", 0)) is None
    sent = {path.stem for path in (ws.outbox_dir / "web" / "confirm").glob("*.eml")}
    assert {probe("new", 1), probe("pending", 1), probe("unsubscribed", 1)} <= sent
    assert probe("active", 1) not in sent and probe("erased", 1) not in sent
