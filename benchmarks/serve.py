"""Benchmark `newsletter serve` under the burst of one-click unsubscribes that follows a send.

    python benchmarks/serve.py                       # 1,000 / 20,000 / 100,000 people
    python benchmarks/serve.py --sizes 20000 --clicks 600 --clients 32

For each list size: a workspace with that many active people, the real `newsletter serve` in
its own process on a loopback port, and --clicks one-click POSTs (RFC 8058, as Gmail sends
them) for different people from --clients concurrent clients, each on a fresh connection.
Printed: requests per second, the 50/95/99 % latencies, and how long after the last answer the
subscriber file held every unsubscribe (the writer's catch-up).

Beside it, the floor: a bare Werkzeug app under the same waitress settings answering the same
POST with a fixed page, no token, no storage. The peer, the old design (each request locks,
parses and rewrites the whole file), was measured with the same load in the issue that led to
the change log: 1.3 req/s and p99 44 s at 20,000 people.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from newsletter.changes import ChangeLog  # noqa: E402
from newsletter.subscribers import ACTIVE, SubscriberList, parse_subscribers  # noqa: E402
from newsletter.tokens import make_token  # noqa: E402
from newsletter.workspace import Workspace, init_workspace  # noqa: E402

CONFIG = """\
[newsletter]
name = "Impuls"
from_name = "Mira Sommerfeld"
from_email = "impuls@praxis.example.org"
base_url = "https://newsletter.praxis.example.org"
website = "https://praxis.example.org"

[imprint]
name = "Mira Sommerfeld"
address = "Musterweg 1, 12345 Musterstadt"
email = "kontakt@praxis.example.org"
"""

FLOOR_APP = textwrap.dedent("""
    import sys
    from werkzeug.wrappers import Request, Response
    from newsletter.web import create_server

    def app(environ, start_response):
        Request(environ).get_data()
        return Response("<p>Abgemeldet.</p>", mimetype="text/html")(environ, start_response)

    create_server(app, "127.0.0.1", int(sys.argv[1])).run()
""")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_healthy(port: int, path: str = "/healthz") -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            post_or_get(port, "GET", path)
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server on {port} did not start")


def post_or_get(port: int, method: str, path: str) -> float:
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        body = b"List-Unsubscribe=One-Click" if method == "POST" else None
        connection.request(method, path, body=body,
                           headers={"Content-Type": "application/x-www-form-urlencoded"} if body else {})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"{method} {path}: HTTP {response.status}")
    finally:
        connection.close()
    return time.perf_counter() - started


def burst(port: int, paths: list[str], clients: int) -> tuple[float, list[float]]:
    with ThreadPoolExecutor(clients) as pool:
        started = time.perf_counter()
        latencies = list(pool.map(lambda path: post_or_get(port, "POST", path), paths))
        return time.perf_counter() - started, latencies


def figures(elapsed: float, latencies: list[float]) -> str:
    cuts = statistics.quantiles(latencies, n=100)
    return (f"{len(latencies) / elapsed:8.0f} req/s   p50 {cuts[49] * 1000:7.1f} ms   "
            f"p95 {cuts[94] * 1000:7.1f} ms   p99 {cuts[98] * 1000:7.1f} ms")


def measure_ours(size: int, clicks: int, clients: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        init_workspace(root)
        (root / "newsletter.toml").write_text(CONFIG, encoding="utf-8")
        ws = Workspace(root)
        people = SubscriberList()
        for index in range(size):
            people.add(f"leser{index}@example.org", f"Leser {index}", status=ACTIVE, source="benchmark")
        ws.subscribers_path.write_text(people.to_toml(), encoding="utf-8")
        secret = ws.secret()
        step = max(1, size // clicks)
        paths = [f"/u/{make_token(secret, p.id)}" for p in people.subscribers[::step][:clicks]]
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "newsletter", "serve", "--port", str(port)], cwd=root,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_healthy(port)
            health: list[float] = []
            stop = threading.Event()

            def probe() -> None:
                while not stop.is_set():
                    health.append(post_or_get(port, "GET", "/healthz"))
                    time.sleep(0.1)

            prober = threading.Thread(target=probe)
            prober.start()
            elapsed, latencies = burst(port, paths, clients)
            answered = time.perf_counter()
            log = ChangeLog(ws.state_dir / "changes.sqlite")
            while log.pending():  # cheap to ask; parsing the file here would slow this process's prober
                time.sleep(0.1)
            caught_up = time.perf_counter() - answered
            stop.set()
            prober.join()
            on_disk = parse_subscribers(ws.subscribers_path, ws.subscribers_path.read_bytes())
            if sum(1 for p in on_disk if p.status != ACTIVE) != len(paths):
                raise SystemExit("the file does not hold every unsubscribe")
        finally:
            server.terminate()
            server.wait()
        print(f"  ours   {size:>7,} people  {figures(elapsed, latencies)}   "
              f"file complete {caught_up:5.1f} s after the last answer; /healthz max {max(health) * 1000:.0f} ms")


def measure_floor(clicks: int, clients: int) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", FLOOR_APP, str(port)], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(port, "/")
        elapsed, latencies = burst(port, [f"/u/x{i}" for i in range(clicks)], clients)
    finally:
        server.terminate()
        server.wait()
    print(f"  floor  (bare Werkzeug app, no storage)  {figures(elapsed, latencies)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 20_000, 100_000])
    parser.add_argument("--clicks", type=int, default=300)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    print(f"{args.clicks} one-click unsubscribes from {args.clients} concurrent clients, fresh connection each")
    measure_floor(args.clicks, args.clients)
    for size in args.sizes:
        measure_ours(size, args.clicks, args.clients)
    print("  peer   (old design: lock + parse + rewrite per request) at 20,000 people: 1.3 req/s, p99 44 s")


if __name__ == "__main__":
    main()
