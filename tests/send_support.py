"""What the send tests share: people in the subscriber file, [smtp] pointing at the test server,
an issue, and the journal's counts (the server and issue fixtures are in conftest.py)."""

from __future__ import annotations

import json

from newsletter.journal import SendJournal, journal_path
from newsletter.subscribers import SubscriberStore
from newsletter.workspace import Workspace

BODY = 'Hallo {{ first_name | default("du") }},\n\n„Verbindung“ – größer als Angst 🌱\n\n' \
       "[Mehr lesen](https://praxis.example.org/artikel)\n"


def add_people(ws: Workspace, people: list[tuple[str, str, str]]) -> None:
    with SubscriberStore(ws.subscribers_path).change() as subscribers:
        for email, name, status in people:
            person = subscribers.add(email, name, status="active" if status != "pending" else "pending")
            if status == "unsubscribed":
                subscribers.set_status(person, "unsubscribed")


def smtp_config(ws: Workspace, port: int, **settings: object) -> None:
    values = {"host": "127.0.0.1", "port": port, "security": "none", "retry_delay": 0, "limit_pause": 0.05,
              **settings}
    lines = [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    config = ws.root / "newsletter.toml"
    config.write_text(config.read_text() + "\n[smtp]\n" + "\n".join(lines) + "\n")
    ws.__dict__.pop("config", None)


def journal_counts(ws: Workspace, slug: str = "2026-12-impuls") -> dict[str, int]:
    journal = SendJournal(journal_path(ws.journal_dir, slug))
    try:
        return journal.counts()
    finally:
        journal.close()


