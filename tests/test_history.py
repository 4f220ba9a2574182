"""Each person's append-only history in subscribers.toml: as written, as read back, as edited by hand."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from conftest import invoke

from newsletter.errors import SubscriberError
from newsletter.subscribers import (
    ACTIVE,
    BOUNCED,
    PENDING,
    UNSUBSCRIBED,
    Event,
    SubscriberStore,
    parse_subscribers,
)
from newsletter.workspace import Workspace

OLD_FILE = """\
# Eine Datei von vor dem Verlauf: keine [[subscriber.event]]-Tabellen.

[[subscriber]]
id = "8mL0QNAFYs0D7-9N"
email = "anna.beispiel@example.org"
name = "Anna Beispiel"
status = "active"
source = "web"
subscribed_at = 2026-10-03 09:15:00+00:00
confirmed_at = 2026-10-03 09:20:00+00:00
consent_version = "1"
consent_text = "Ja, ich möchte den Newsletter „Impuls“ erhalten."
signup_ip = "192.0.2.10"
confirm_ip = "192.0.2.10"

[[subscriber]]
id = "x2"
email = "ben@example.org"
status = "unsubscribed"
subscribed_at = 2025-01-01T10:00:00
unsubscribed_at = 2026-01-01 10:00:00+00:00
"""


@pytest.fixture
def store(ws: Workspace) -> SubscriberStore:
    return SubscriberStore(ws.subscribers_path)


def test_an_old_file_without_history_still_loads_and_streams(store: SubscriberStore) -> None:
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_text(OLD_FILE, encoding="utf-8")
    people = store.load()
    assert [p.events for p in people] == [[], []]
    assert list(store.stream()) == people.subscribers
    assert people.get("ben@example.org").subscribed_at == dt.datetime(2025, 1, 1, 10, tzinfo=dt.UTC)
    store.unsubscribe("anna.beispiel@example.org")  # the next change appends; nothing old is rewritten
    text = store.path.read_text(encoding="utf-8")
    assert 'consent_text = "Ja, ich möchte den Newsletter „Impuls“ erhalten."' in text
    assert text.count("[[subscriber.event]]") == 1
    assert '[[subscriber.event]]\nkind = "unsubscribed"\nat = ' in text and 'source = "von Hand"' in text


def test_every_change_is_appended_as_an_event_in_toml(store: SubscriberStore) -> None:
    person = store.add("anna@example.org", "Anna", source="Praxis, schriftlich")
    store.update_status(person.id, ACTIVE)
    store.update_status(person.id, UNSUBSCRIBED, source="Abmeldelink")
    store.update_status(person.id, BOUNCED)
    events = store.load().get("anna@example.org").events
    assert [(e.kind, e.status, e.source) for e in events] == [
        ("added", PENDING, "Praxis, schriftlich"), ("confirmed", "", ""), ("unsubscribed", "", "Abmeldelink"),
        ("bounced", "", "")]
    assert all(e.at.tzinfo is not None for e in events)
    text = store.path.read_text(encoding="utf-8")
    assert text.count("\n[[subscriber.event]]\nkind = ") == 4
    assert text.index("[[subscriber.event]]") > text.index("status = ")  # the person's fields first


def test_stream_equals_load_with_histories(store: SubscriberStore) -> None:
    with store.change() as people:
        for n in range(20):
            person = people.add(f"p{n}@example.org", f"Person {n}", ACTIVE if n % 2 else PENDING)
            if n % 3 == 0:
                people.set_status(person, UNSUBSCRIBED)
            people.record(person, Event("bounce", dt.datetime(2026, 12, 1, tzinfo=dt.UTC), issue="2026-12-innehalten",
                                        code="4.2.2", diagnostic="552 Postfach voll"))
        people.add("weg@example.org")
        people.forget("weg@example.org")
    loaded = store.load().subscribers
    assert list(store.stream()) == loaded
    assert [e.kind for e in loaded[3].events] == ["added", "unsubscribed", "bounce"]
    assert loaded[3].events[-1].diagnostic == "552 Postfach voll"  # a kind this version does not name is kept


def test_a_hand_written_history_with_spaces_and_inline_tables_reads_the_same(store: SubscriberStore) -> None:
    store.add("anna@example.org")
    store.add("ben@example.org")
    text = store.path.read_text(encoding="utf-8")
    text = text.replace("[[subscriber.event]]", "[[ subscriber.event ]]", 1)
    store.path.write_text(text, encoding="utf-8")
    assert list(store.stream()) == store.load().subscribers
    inline = ('[[subscriber]]\nid = "c1"\nemail = "cleo@example.org"\nevent = [{ kind = "added", '
              'at = 2026-01-01T10:00:00Z, note = "Visitenkarte" }]\n')
    people = parse_subscribers(Path("s.toml"), inline.encode())
    assert people.get("cleo@example.org").events[0].note == "Visitenkarte"


@pytest.mark.parametrize(("old", "new", "message"), [
    ('kind = "added"', 'kind = "added"\nwann = 2026-01-01', "[[subscriber.event]] unbekannter Schlüssel „wann“"),
    ('kind = "added"', 'kind = "Hinzugefügt"', "[[subscriber.event]] kind fehlt oder ist ungültig"),
    ('kind = "added"\nat = ', 'kind = "added"\nat = "gestern"\n#', "[[subscriber.event]] at muss Datum und Uhrzeit"),
    ('kind = "added"', 'kind = "added"\nline = "drei"', "[[subscriber.event]] line muss eine Zeilennummer sein"),
])
def test_a_broken_event_names_its_own_line(ws: Workspace, store: SubscriberStore, runner, old: str, new: str,
                                           message: str) -> None:
    store.add("anna@example.org")
    store.add("ben@example.org")
    store.backup_path.unlink()
    text = store.path.read_text(encoding="utf-8")
    second = text.index("[[subscriber.event]]", text.index("ben@example.org"))
    line = text.count("\n", 0, second) + 1
    broken = text[:second] + text[second:].replace(old, new, 1)
    store.path.write_text(broken, encoding="utf-8")
    with pytest.raises(SubscriberError) as streamed:
        list(store.stream())
    assert str(streamed.value).startswith(f"{store.path}:{line}: {message}")
    result = invoke(runner, "subscribers", "add", "cleo@example.org")
    assert result.exit_code == 1 and result.stderr.startswith(f"Fehler: {store.path}:{line}: {message}")
    assert store.path.read_text(encoding="utf-8") == broken


def test_a_date_without_time_is_kept_as_a_date(store: SubscriberStore) -> None:
    with store.change() as people:
        people.add("anna@example.org", stamp=False, subscribed_at=dt.date(2024, 3, 15))
    assert "subscribed_at = 2024-03-15\n" in store.path.read_text(encoding="utf-8")
    assert store.load().get("anna@example.org").subscribed_at == dt.date(2024, 3, 15)
    text = store.path.read_text(encoding="utf-8").replace("subscribed_at = 2024-03-15",
                                                           "subscribed_at = 2024-03-15\ninvited_at = 2024-03-16")
    with pytest.raises(SubscriberError, match="invited_at muss Datum und Uhrzeit sein"):
        parse_subscribers(store.path, text.encode())


def test_show_lists_the_history_and_json_carries_it(ws: Workspace, store: SubscriberStore, runner) -> None:
    person = store.add("anna@example.org", "Anna", source="Praxis")
    store.update_status(person.id, UNSUBSCRIBED, source="Abmeldelink")
    shown = invoke(runner, "subscribers", "show", "anna@example.org")
    assert "Verlauf" in shown.stdout and "Von Hand eingetragen" in shown.stdout and "Abgemeldet" in shown.stdout
    assert "Nachweis" in shown.stdout and "von Hand eingetragen" in shown.stdout
    record = json.loads(invoke(runner, "subscribers", "show", "anna@example.org", "--json").stdout)
    assert [e["kind"] for e in record["events"]] == ["added", "unsubscribed"]
    assert record["events"][1]["source"] == "Abmeldelink"


def test_an_import_by_an_older_version_counts_as_without_proof(ws: Workspace, store: SubscriberStore, runner) -> None:
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_text(OLD_FILE.replace('source = "web"', 'source = "Import alte-liste.csv"')
                          + '\n[[subscriber]]\nid = "x3"\nemail = "hand@example.org"\nstatus = "active"\n'
                            'source = "Praxis, schriftlich"\n', encoding="utf-8")
    stats = json.loads(invoke(runner, "subscribers", "stats", "--json").stdout)
    assert stats["without_proof"] == 1  # the import wrote its own moment as the confirmation; the hand entry is hers
    refused = invoke(runner, "subscribers", "invite", "--without-proof")
    assert "Bestätigungsmail an 1 Person(en) ohne DOI-Nachweis senden?" in refused.stderr
