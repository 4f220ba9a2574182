"""Reading the subscriber file one table at a time gives exactly what the whole-file parse gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.errors import SubscriberError
from newsletter.subscribers import SubscriberStore


@pytest.fixture
def store(tmp_path: Path) -> SubscriberStore:
    store = SubscriberStore(tmp_path / "subscribers.toml")
    with store.change() as people:
        for i in range(30):
            person = people.add(f"p{i}@example.org", f"Person {i}", status="active" if i % 3 else "pending")
            if i % 5 == 0:
                people.set_status(person, "unsubscribed")
        people.add("weg@example.org")
        people.forget("weg@example.org")  # leaves a [suppression] table at the end
    return store


def test_stream_equals_load(store: SubscriberStore) -> None:
    assert "[suppression]" in store.path.read_text()
    assert list(store.stream()) == store.load().subscribers
    assert [s.email for s in store.active()] == [s.email for s in store.load() if s.status == "active"]


def test_hand_written_multiline_string_falls_back_to_the_whole_file(store: SubscriberStore) -> None:
    text = store.path.read_text()
    note = 'note = """Rief an:\n[[subscriber]] bitte nicht löschen"""\n'
    text = text.replace('name = "Person 4"', note + 'name = "Person 4"')
    store.path.write_text(text)
    assert list(store.stream()) == store.load().subscribers
    assert len(list(store.stream())) == 30


@pytest.mark.parametrize(("old", "new", "message"), [
    ('email = "p7@example.org"', 'email = "P2@example.org"', "steht doppelt"),
    ('status = "active"', 'status = "aktiv"', "status „aktiv“ ist unbekannt"),
    ('name = "Person 9"', 'name = "Person 9', "ungültiges TOML"),
])
def test_stream_of_a_broken_file_raises_the_whole_file_error(store: SubscriberStore, old: str, new: str,
                                                             message: str) -> None:
    store.path.write_text(store.path.read_text().replace(old, new, 1))
    with pytest.raises(SubscriberError) as streamed:
        list(store.stream())
    with pytest.raises(SubscriberError) as loaded:
        store.load()
    assert str(streamed.value) == str(loaded.value) and message in str(streamed.value)


def test_stream_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert list(SubscriberStore(tmp_path / "nichts.toml").stream()) == []


def test_a_duplicate_id_is_refused_not_silently_dropped(store: SubscriberStore) -> None:
    people = store.load().subscribers
    text = store.path.read_text().replace(f'id = "{people[5].id}"', f'id = "{people[2].id}"')
    store.path.write_text(text)
    with pytest.raises(SubscriberError, match="kommt doppelt vor"):
        list(store.stream())
