"""Benchmark the subscriber file: load and save of 10,000 and 100,000 people.

    python benchmarks/subscribers.py                   # 10,000 and 100,000, best of 3
    python benchmarks/subscribers.py --sizes 1000 10000 --repeat 5
    python benchmarks/subscribers.py --events          # each with the history a web sign-up leaves

What is measured, in this process, best of --repeat runs (wall clock):

- ours load:   `SubscriberStore.load()`: read, parse with tomli, validate every record with
               line numbers, build the Subscriber objects and the email/id indexes.
- ours stream: `SubscriberStore.stream()` to the end: one [[subscriber]] table (with its
               [[subscriber.event]] tables) at a time, as a send reads its audience.
- ours save:   `SubscriberList.to_toml()` with tomli-w plus the atomic write under the lock
               (temp file, fsync, backup as a hard link, rename, fsync of the folder).
- ours change: `with store.change()` marking one person unsubscribed: what one click on an
               unsubscribe link or one bounce costs (lock, load, change, save).

Beside them, the practical limits for the same data: the bare parser (`tomli.loads`, and the
standard library's `tomllib.loads`) and the bare writer (`tomli_w.dumps` of plain dicts) with
no validation or disk, and plain `json` of the same records, the fastest format Python has.

The subscribers are fake (example.org) with a full consent record, like real web sign-ups;
with --events each also carries the three events such a sign-up now leaves in its history
(sign-up, confirmation mail, confirmation). Nothing here is run by the tests; there are no
timing assertions anywhere.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import tomli
import tomli_w

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from newsletter.subscribers import (  # noqa: E402 - after the path is set
    ACTIVE,
    CONFIRMED,
    INVITED,
    SIGNUP,
    UNSUBSCRIBED,
    Event,
    Subscriber,
    SubscriberList,
    SubscriberStore,
    new_id,
)

CONSENT = "Ja, ich möchte den Newsletter „Impuls“ erhalten."
PAGE = "https://praxis.example.org/newsletter"


def fake_people(count: int, events: bool = False) -> SubscriberList:
    start = dt.datetime(2024, 1, 1, 9, 0, tzinfo=dt.UTC)
    people = []
    for n in range(count):
        signed = start + dt.timedelta(minutes=17 * n)
        confirmed = signed + dt.timedelta(minutes=5)
        history = [
            Event(SIGNUP, signed, ip=f"192.0.2.{n % 250}", page=PAGE, consent_version="1", consent_text=CONSENT),
            Event(INVITED, signed, message_id=f"<{n:024x}@praxis.example.org>"),
            Event(CONFIRMED, confirmed, ip=f"198.51.100.{n % 250}", consent_version="1", consent_text=CONSENT),
        ] if events else []
        people.append(Subscriber(
            id=new_id(), email=f"person{n}@example.org", name=f"Vorname{n} Müller-Lüdenscheidt",
            status=ACTIVE, source="web", subscribed_at=signed, confirmed_at=confirmed, consent_version="1",
            consent_text=CONSENT, signup_ip=f"192.0.2.{n % 250}", signup_page=PAGE,
            confirm_ip=f"198.51.100.{n % 250}", events=history))
    return SubscriberList(subscribers=people)


def best(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(count: int, repeat: int, folder: Path, events: bool = False) -> dict[str, float | int]:
    store = SubscriberStore(folder / f"n{count}" / "subscribers.toml")
    people = fake_people(count, events)

    def save() -> None:
        with store.lock:
            store._write(people.to_toml().encode())  # the write alone, without a load

    save()
    text = store.path.read_text(encoding="utf-8")
    records = [person.to_toml() for person in people]
    as_json = json.dumps([person.to_json() for person in people], ensure_ascii=False)
    target = people.subscribers[count // 2].id

    def change() -> None:
        with store.change() as current:
            person = current.by_id(target)
            current.set_status(person, UNSUBSCRIBED if person.status == ACTIVE else ACTIVE)

    return {
        "count": count,
        "megabytes": len(text.encode()) / 1e6,
        "load": best(repeat, store.load),
        "stream": best(repeat, lambda: sum(1 for _ in store.stream())),
        "save": best(repeat, save),
        "change": best(repeat, change),
        "tomli.loads": best(repeat, lambda: tomli.loads(text)),
        "tomllib.loads": best(repeat, lambda: tomllib.loads(text)),
        "tomli_w.dumps": best(repeat, lambda: tomli_w.dumps({"subscriber": records})),
        "json.loads": best(repeat, lambda: json.loads(as_json)),
        "json.dumps": best(repeat, lambda: json.dumps([p.to_json() for p in people], ensure_ascii=False)),
    }


def seconds(value: float) -> str:
    return f"{value * 1000:7.0f} ms" if value < 1 else f"{value:7.2f} s "


def report(result: dict[str, float | int]) -> None:
    print(f"\n{result['count']:,} subscribers, {result['megabytes']:.1f} MB of TOML")
    print(f"  {'':8} {'ours':>10}   {'tomli':>10} {'tomllib':>10} {'json':>10}")
    print(f"  {'load':8} {seconds(result['load'])}   {seconds(result['tomli.loads'])} "
          f"{seconds(result['tomllib.loads'])} {seconds(result['json.loads'])}")
    print(f"  {'stream':8} {seconds(result['stream'])}   (one table at a time, to the end)")
    print(f"  {'save':8} {seconds(result['save'])}   {seconds(result['tomli_w.dumps'])} "
          f"{'':>10} {seconds(result['json.dumps'])}")
    print(f"  {'change':8} {seconds(result['change'])}   (lock, load, one status, save)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the best counts")
    parser.add_argument("--events", action="store_true", help="give each person a web sign-up's history")
    options = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, tomli {tomli.__version__ if hasattr(tomli, '__version__') else '?'}"
          f" ({'compiled' if tomli.__file__.endswith('.so') else 'pure Python'}), best of {options.repeat}")
    print("ours = newsletter.subscribers; the other columns parse or write the same data with nothing else")
    with tempfile.TemporaryDirectory() as folder:
        for count in options.sizes:
            report(measure(count, options.repeat, Path(folder), options.events))


if __name__ == "__main__":
    main()
