"""The subscriber file and `newsletter subscribers …`: what lands on disk, what the author sees."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import invoke

from newsletter.cli.subscribers import FIELD_LABELS
from newsletter.errors import SubscriberError
from newsletter.subscribers import (
    ACTIVE,
    BOUNCED,
    FIELD_ORDER,
    PENDING,
    UNSUBSCRIBED,
    SubscriberStore,
    now,
    parse_subscribers,
)
from newsletter.workspace import Workspace


@pytest.fixture
def store(ws: Workspace) -> SubscriberStore:
    return SubscriberStore(ws.subscribers_path)


def leftovers(folder: Path) -> list[str]:
    """Temp files a writer would leave behind: never data, and gone after the next write."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".subscribers.toml."))


# The store


def test_store_writes_private_file_and_keeps_one_backup(store: SubscriberStore) -> None:
    store.add("anna@example.org", "Anna")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    first = store.path.read_bytes()
    assert not store.backup_path.exists()
    store.add("ben@example.org")
    assert store.backup_path.read_bytes() == first
    store.add("cleo@example.org")
    assert b"ben@example.org" in store.backup_path.read_bytes()
    assert b"cleo@example.org" not in store.backup_path.read_bytes()
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert leftovers(store.path.parent) == []


def test_store_round_trips_every_field(store: SubscriberStore) -> None:
    with store.change() as people:
        added = people.add("anna@example.org", "Anna Müller", ACTIVE, "web",
                           consent_version="2", consent_text="Ja, ich möchte …", signup_ip="192.0.2.1",
                           signup_page="https://praxis.example.org/nl", confirm_ip="192.0.2.2",
                           note="„Anführungszeichen“ und \\ und \"")
    loaded = store.load().get("ANNA@example.org")
    assert loaded == added
    assert loaded.confirmed_at == loaded.subscribed_at
    assert loaded.subscribed_at.tzinfo is not None


def test_addresses_are_normalised_and_compared_without_case(store: SubscriberStore) -> None:
    person = store.add("  Anna.Berg@Example.ORG ")
    assert person.email == "Anna.Berg@example.org"
    people = store.load()
    assert people.get("anna.berg@EXAMPLE.org") == person
    assert people.by_id(person.id) == person
    with pytest.raises(SubscriberError, match="steht schon in der Liste"):
        store.add("ANNA.BERG@example.org")
    with pytest.raises(SubscriberError, match="keine gültige E-Mail-Adresse"):
        store.add("anna@@example.org")
    assert len(store.load()) == 1


def test_name_with_line_break_and_script_is_stored_flat_as_data(store: SubscriberStore) -> None:
    name = "Anna\r\nBcc: boese@example.com\u2028<script>alert(1)</script>"
    store.add("anna@example.org", name)
    stored = store.load().get("anna@example.org").name
    assert stored == "Anna Bcc: boese@example.com <script>alert(1)</script>"
    text = store.path.read_text(encoding="utf-8")
    assert 'name = "Anna Bcc: boese@example.com <script>alert(1)</script>"' in text


def test_hand_edited_name_with_escaped_newline_is_flattened_on_load(tmp_path: Path) -> None:
    raw = b'[[subscriber]]\nid = "a1"\nemail = "anna@example.org"\nname = "Anna\\nTo: x@example.com"\n'
    people = parse_subscribers(tmp_path / "s.toml", raw)
    assert people.get("anna@example.org").name == "Anna To: x@example.com"


def test_active_yields_only_active_people_in_file_order(store: SubscriberStore) -> None:
    with store.change() as people:
        for email, status in [("a@example.org", ACTIVE), ("b@example.org", PENDING),
                              ("c@example.org", ACTIVE), ("d@example.org", ACTIVE)]:
            people.add(email, status=status)
        people.set_status(people.get("d@example.org"), UNSUBSCRIBED)
    assert [s.email for s in store.active()] == ["a@example.org", "c@example.org"]


def test_status_changes_carry_their_timestamps(store: SubscriberStore) -> None:
    person = store.add("anna@example.org")
    assert person.status == PENDING and person.confirmed_at is None
    confirmed = store.update_status(person.id, ACTIVE)
    assert confirmed.status == ACTIVE and confirmed.confirmed_at is not None
    left = store.update_status(person.id, UNSUBSCRIBED)
    assert left.unsubscribed_at is not None and left.confirmed_at == confirmed.confirmed_at
    bounced = store.update_status(person.id, BOUNCED)
    assert bounced.bounced_at is not None
    on_disk = store.load().by_id(person.id)
    assert (on_disk.status, on_disk.unsubscribed_at) == (BOUNCED, left.unsubscribed_at)


def test_update_status_of_unknown_id_changes_nothing(store: SubscriberStore) -> None:
    store.add("anna@example.org")
    before = store.path.read_bytes()
    assert store.update_status("gibt-es-nicht", UNSUBSCRIBED) is None
    assert store.path.read_bytes() == before
    with pytest.raises(SubscriberError, match="Status „weg“ ist unbekannt"):
        store.update_status("gibt-es-nicht", "weg")


def test_change_that_fails_writes_nothing(store: SubscriberStore) -> None:
    store.add("anna@example.org")
    before = store.path.read_bytes()
    with pytest.raises(RuntimeError), store.change() as people:
        people.add("ben@example.org")
        raise RuntimeError("mittendrin")
    assert store.path.read_bytes() == before


def test_forget_keeps_only_a_hash_and_no_copy_anywhere(store: SubscriberStore) -> None:
    store.add("anna.geheim@example.org", "Anna Geheim")
    store.add("ben@example.org")
    store.add("cleo@example.org")  # the backup now holds Anna too
    erased = store.forget("Anna.Geheim@example.org")
    assert erased.name == "Anna Geheim"
    for path in store.path.parent.iterdir():
        data = path.read_bytes().lower()
        assert b"anna" not in data and b"geheim" not in data, path.name
    people = store.load()
    assert people.get("anna.geheim@example.org") is None
    assert people.is_suppressed("ANNA.GEHEIM@example.org")
    assert not people.is_suppressed("ben@example.org")
    with pytest.raises(SubscriberError, match="gelöscht"):
        store.add("anna.geheim@example.org")
    with pytest.raises(SubscriberError, match="nicht in der Liste; die Adresse wurde gelöscht"):
        store.forget("anna.geheim@example.org")
    back = store.add("anna.geheim@example.org", allow_erased=True)
    assert back.status == PENDING
    assert not store.load().is_suppressed("anna.geheim@example.org")


def test_leftover_temp_files_are_ignored_and_cleaned_up(store: SubscriberStore) -> None:
    store.add("anna@example.org")
    litter = store.path.parent / ".subscribers.toml.k1ll3d.tmp"
    litter.write_text('[[subscriber]]\nid = "x"\nemail = "halb@example.org"\n')
    (store.path.parent / ".subscribers.toml.k1ll3d.tmp.bak").write_text("kaputt [[")
    assert [s.email for s in store.load()] == ["anna@example.org"]
    store.add("ben@example.org")
    assert leftovers(store.path.parent) == []
    assert [s.email for s in store.load()] == ["anna@example.org", "ben@example.org"]


BROKEN = [
    ("syntax", lambda t: t.replace('status = "active"', "status = active", 1), "Zeile {line2}: ungültiges TOML"),
    ("unknown key", lambda t: t.replace('status = "active"', 'staus = "active"', 1),
     "{line0}: unbekannter Schlüssel „staus“"),
    ("bad status", lambda t: t.replace('status = "active"', 'status = "aktiv"', 1),
     "{line0}: status „aktiv“ ist unbekannt"),
    ("duplicate", lambda t: t.replace("ben@example.org", "ANNA@example.org"),
     "{line1}: ANNA@example.org steht doppelt (auch Zeile {line0})"),
    ("bad date", lambda t: t.replace("subscribed_at = ", 'subscribed_at = "gestern"\n#', 1),
     "{line0}: subscribed_at muss Datum und Uhrzeit sein"),
    ("bad address", lambda t: t.replace("ben@example.org", "ben(at)example.org"),
     "{line1}: „ben(at)example.org“ ist keine gültige E-Mail-Adresse"),
    ("bad id", lambda t: t.replace('id = "', 'id = "mit leerzeichen ', 1), "{line0}: id „mit leerzeichen"),
    ("missing email", lambda t: t.replace('email = "ben@example.org"\n', ""), "{line1}: email fehlt"),
    ("suppression without salt", lambda t: t + '\n[suppression]\nhashes = ["abc"]\n', "salt fehlt"),
    ("unknown table", lambda t: t + '\n[[abonnent]]\nemail = "x@example.org"\n', "unbekannter Eintrag „abonnent“"),
    ("not utf-8", lambda t: t.replace("Anna", "\udcc4nna"), "ist nicht als UTF-8 gespeichert"),
]


@pytest.mark.parametrize(("breakage", "message"), [(b[1], b[2]) for b in BROKEN],
                         ids=[b[0] for b in BROKEN])
def test_hand_broken_file_gives_line_and_is_never_overwritten(
        ws: Workspace, store: SubscriberStore, runner, breakage, message: str) -> None:
    store.add("anna@example.org", "Anna", ACTIVE)
    store.add("ben@example.org", "Ben", ACTIVE)
    store.backup_path.unlink()
    text = store.path.read_text(encoding="utf-8")
    headers = [n for n, line in enumerate(text.splitlines(), start=1) if line == "[[subscriber]]"]
    status_line = next(n for n, line in enumerate(text.splitlines(), start=1) if line.startswith("status"))
    broken = breakage(text).encode("utf-8", "surrogateescape")
    store.path.write_bytes(broken)
    expected = message.format(line0=headers[0], line1=headers[1], line2=status_line)
    for command in (["list"], ["add", "cleo@example.org"], ["remove", "anna@example.org"],
                    ["import", str(ws.root / "neu.csv")]):
        (ws.root / "neu.csv").write_text("email\ncleo@example.org\n")
        result = invoke(runner, "subscribers", *command)
        assert result.exit_code == 1, command
        assert result.stderr.startswith(f"Fehler: {store.path}"), result.stderr
        assert expected in result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert store.path.read_bytes() == broken
    assert not store.backup_path.exists()


def test_missing_file_reads_as_empty_list(store: SubscriberStore, runner) -> None:
    assert len(store.load()) == 0
    result = invoke(runner, "subscribers", "list", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    assert not store.path.exists()


# Many writers at once, and writers killed mid-write

CONCURRENT_WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from newsletter.subscribers import SubscriberStore, UNSUBSCRIBED
    path, number, rounds, go = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    store = SubscriberStore(path)
    ids = {s.email: s.id for s in store.load()}
    while not go.exists():
        time.sleep(0.002)
    for k in range(rounds):
        store.add(f"neu-{number}-{k}@example.org", f"Neu {number}")
        old = f"alt-{number}-{k}@example.org"
        if k % 2:
            store.unsubscribe(old)
        else:
            store.update_status(ids[old], UNSUBSCRIBED)
""")


@pytest.mark.slow
def test_concurrent_processes_never_lose_a_change(store: SubscriberStore, tmp_path: Path) -> None:
    processes, rounds = 16, 4
    with store.change() as people:
        for number in range(processes):
            for k in range(rounds):
                people.add(f"alt-{number}-{k}@example.org", status=ACTIVE)
    go = tmp_path / "go"
    workers = [subprocess.Popen([sys.executable, "-c", CONCURRENT_WORKER, str(store.path), str(number),
                                 str(rounds), str(go)], stderr=subprocess.PIPE)
               for number in range(processes)]
    go.touch()
    for worker in workers:
        _, error = worker.communicate(timeout=120)
        assert worker.returncode == 0, error.decode()
    people = store.load()
    assert len(people) == 2 * processes * rounds
    for number in range(processes):
        for k in range(rounds):
            assert people.get(f"neu-{number}-{k}@example.org").status == PENDING
            assert people.get(f"alt-{number}-{k}@example.org").status == UNSUBSCRIBED
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert leftovers(store.path.parent) == []


CRASH_WRITER = textwrap.dedent("""
    import os, stat, sys, time
    from pathlib import Path
    from newsletter.subscribers import SubscriberStore
    store = SubscriberStore(Path(sys.argv[1]))
    hold_write, hold_at = int(sys.argv[2]), sys.argv[3]
    writes, real_fsync = 0, os.fsync

    def fsync(fd):
        # The real fsync, then optionally wait there to be killed: after the temp file is
        # complete but before the rename ("file"), or after the rename ("dir").
        real_fsync(fd)
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        if writes == hold_write and kind == hold_at:
            print("angehalten", flush=True)
            time.sleep(3600)

    os.fsync = fsync
    print("bereit", flush=True)
    while True:
        writes += 1
        with store.change() as people:
            generation = int(next(iter(people)).note) + 1
            for person in people:
                person.note = str(generation)
            people.changed = True
""")


def _generation(path: Path, size: int) -> int:
    """The file parses, holds everyone, and is one whole state: the same generation throughout."""
    people = parse_subscribers(path, path.read_bytes())
    assert len(people) == size
    generations = {person.note for person in people}
    assert len(generations) == 1, generations
    return int(generations.pop())


# Where each kill lands, cycled: (write to hold in, where) or a random moment. "file": the temp
# file is complete but not renamed; "dir": renamed, but the folder not yet synced.
KILL_PLANS = [(0, "never"), (1, "file"), (2, "dir"), (0, "never"), (2, "file"), (1, "dir")]


@pytest.mark.slow
def test_writer_killed_mid_write_leaves_old_or_new_file(store: SubscriberStore) -> None:
    size = 3000
    with store.change() as people:
        for n in range(size):
            people.add(f"person-{n}@example.org", f"Person {n}", ACTIVE, note="0")
    rng = random.Random(8058)
    generation = 0
    for attempt in range(30):
        hold_write, hold_at = KILL_PLANS[attempt % len(KILL_PLANS)]
        writer = subprocess.Popen(
            [sys.executable, "-c", CRASH_WRITER, str(store.path), str(hold_write), hold_at],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert writer.stdout.readline() == b"bereit\n", writer.stderr.read().decode()
        if hold_at == "never":
            time.sleep(rng.uniform(0.0, 0.4))  # reading, serialising, writing or renaming
        else:
            assert writer.stdout.readline() == b"angehalten\n", writer.stderr.read().decode()
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        writer.stderr.close()
        before, generation = generation, _generation(store.path, size)
        if hold_at == "file":  # the old state, with the unfinished temp file lying beside it
            assert generation == before + hold_write - 1
            assert leftovers(store.path.parent)
        elif hold_at == "dir":  # the new state, already complete
            assert generation == before + hold_write
        else:
            assert generation >= before
        if store.backup_path.exists():
            assert _generation(store.backup_path, size) <= generation
    store.update_status(store.load().get("person-0@example.org").id, UNSUBSCRIBED)
    assert leftovers(store.path.parent) == []
    assert store.load().get("person-0@example.org").status == UNSUBSCRIBED


# The commands


def test_add_is_pending_unless_active_is_asked_for(ws: Workspace, store: SubscriberStore, runner) -> None:
    result = invoke(runner, "subscribers", "add", "anna@example.org", "--name", "Anna Müller")
    assert result.exit_code == 0
    assert "Hinzugefügt: anna@example.org (unbestätigt)" in result.stdout
    assert store.load().get("anna@example.org").status == PENDING
    result = invoke(runner, "subscribers", "add", "ben@example.org", "--status", "active",
                    "--source", "Praxis, schriftlich", "--json")
    assert result.exit_code == 0
    record = json.loads(result.stdout)
    assert (record["status"], record["source"]) == (ACTIVE, "Praxis, schriftlich")
    assert record["confirmed_at"] is not None
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


@pytest.mark.parametrize(("args", "code", "message"), [
    (["keine-adresse"], 1, "„keine-adresse“ ist keine gültige E-Mail-Adresse"),
    (["ANNA@example.org"], 1, "ANNA@example.org: steht schon in der Liste (Status: unbestätigt)"),
    (["neu@example.org", "--status", "unsubscribed"], 2, ""),
])
def test_add_refuses_bad_input_with_one_line(store: SubscriberStore, runner, args, code, message) -> None:
    store.add("anna@example.org")
    result = invoke(runner, "subscribers", "add", *args)
    assert result.exit_code == code
    assert "Traceback" not in result.output
    if message:
        assert result.stderr == f"Fehler: {message}\n"
    assert len(store.load()) == 1


def _people(store: SubscriberStore) -> None:
    with store.change() as people:
        people.add("anna@example.org", "Anna Müller", ACTIVE, "web", signup_ip="192.0.2.7")
        people.add("ben@example.org", "Ben", PENDING)
        people.set_status(people.add("cleo@example.org", "Cleo", ACTIVE), UNSUBSCRIBED)


def test_list_as_table_and_json(store: SubscriberStore, runner) -> None:
    _people(store)
    table = invoke(runner, "subscribers", "list")
    assert table.exit_code == 0
    for expected in ("anna@example.org", "Anna Müller", "aktiv", "unbestätigt", "abgemeldet", "3 Einträge"):
        assert expected in table.stdout
    records = json.loads(invoke(runner, "subscribers", "list", "--json").stdout)
    assert [r["email"] for r in records] == ["anna@example.org", "ben@example.org", "cleo@example.org"]
    assert {"email", "name", "status", "id"} <= set(records[0])
    active = json.loads(invoke(runner, "subscribers", "list", "--status", "active", "--json").stdout)
    assert [r["email"] for r in active] == ["anna@example.org"]
    empty = invoke(runner, "subscribers", "list", "--status", "bounced")
    assert empty.exit_code == 0 and "Niemand" in empty.stdout


def test_show_prints_everything_stored(store: SubscriberStore, runner) -> None:
    _people(store)
    record = json.loads(invoke(runner, "subscribers", "show", "ANNA@example.org", "--json").stdout)
    assert set(record) == set(FIELD_ORDER)
    assert (record["signup_ip"], record["source"]) == ("192.0.2.7", "web")
    shown = invoke(runner, "subscribers", "show", "anna@example.org").stdout
    for expected in ("Anna Müller", "active (aktiv)", "192.0.2.7", record["id"], "IP bei Anmeldung"):
        assert expected in shown
    missing = invoke(runner, "subscribers", "show", "niemand@example.org")
    assert missing.exit_code == 1 and missing.stderr == "Fehler: niemand@example.org: nicht in der Liste\n"


def test_show_labels_every_field() -> None:
    assert set(FIELD_LABELS) == set(FIELD_ORDER)


def test_remove_marks_unsubscribed_and_keeps_consent(store: SubscriberStore, runner) -> None:
    _people(store)
    result = invoke(runner, "subscribers", "remove", "Anna@Example.org")
    assert result.exit_code == 0 and "Abgemeldet: anna@example.org" in result.stdout
    anna = store.load().get("anna@example.org")
    assert anna.status == UNSUBSCRIBED and anna.unsubscribed_at is not None
    assert anna.signup_ip == "192.0.2.7" and anna.confirmed_at is not None
    again = invoke(runner, "subscribers", "remove", "anna@example.org")
    assert again.exit_code == 0 and "war schon abgemeldet" in again.stdout
    assert invoke(runner, "subscribers", "remove", "x@example.org").exit_code == 1


def test_forget_asks_first_and_then_erases(store: SubscriberStore, runner) -> None:
    _people(store)
    refused = invoke(runner, "subscribers", "forget", "anna@example.org")
    assert refused.exit_code == 1 and "--yes" in refused.stderr
    assert store.load().get("anna@example.org") is not None
    result = invoke(runner, "subscribers", "forget", "anna@example.org", "--yes")
    assert result.exit_code == 0 and "Gelöscht: anna@example.org" in result.stdout
    assert b"anna" not in store.path.read_bytes()
    shown = invoke(runner, "subscribers", "show", "anna@example.org")
    assert shown.exit_code == 1 and "wurde gelöscht" in shown.stderr
    add = invoke(runner, "subscribers", "add", "anna@example.org")
    assert add.exit_code == 1 and "gelöscht" in add.stderr
    assert invoke(runner, "subscribers", "add", "anna@example.org", "--allow-erased").exit_code == 0


def test_export_csv_json_and_excel(ws: Workspace, store: SubscriberStore, runner, tmp_path: Path) -> None:
    _people(store)
    store.add("formel@example.org", "=HYPERLINK(\"https://boese.example.com\")")
    result = invoke(runner, "subscribers", "export")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["email"] for r in rows][:3] == ["anna@example.org", "ben@example.org", "cleo@example.org"]
    assert list(rows[0]) == list(FIELD_ORDER)
    assert rows[0]["name"] == "Anna Müller" and rows[3]["name"].startswith("=HYPERLINK")
    target = tmp_path / "sicherung.json"
    assert invoke(runner, "subscribers", "export", str(target), "--json").exit_code == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [r["status"] for r in json.loads(target.read_text())] == [ACTIVE, PENDING, UNSUBSCRIBED, PENDING]
    again = invoke(runner, "subscribers", "export", str(target))
    assert again.exit_code == 1 and "--force" in again.stderr
    assert json.loads(target.read_text())  # untouched
    excel = tmp_path / "excel.csv"
    assert invoke(runner, "subscribers", "export", str(excel), "--excel").exit_code == 0
    data = excel.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfid;email;name;")
    assert "'=HYPERLINK" in data.decode("utf-8-sig")


def test_export_then_import_into_a_new_list(store: SubscriberStore, runner, tmp_path: Path) -> None:
    _people(store)
    target = tmp_path / "umzug.csv"
    assert invoke(runner, "subscribers", "export", str(target), "--excel").exit_code == 0
    other = tmp_path / "neu"
    invoke(runner, "init", str(other))
    result = invoke(runner, "--workspace", str(other), "subscribers", "import", str(target), "--json")
    assert result.exit_code == 0, result.output
    moved = SubscriberStore(other / "subscribers" / "subscribers.toml").load()
    # A move keeps everything that matters: who left stays left, ids (old unsubscribe links), consent.
    keep = ("email", "name", "status", "id", "subscribed_at", "confirmed_at", "unsubscribed_at")
    assert [[getattr(p, k) for k in keep] for p in moved] == [[getattr(p, k) for k in keep] for p in store.load()]


def test_stats_counts_by_status_and_month(store: SubscriberStore, runner) -> None:
    _people(store)
    store.forget("ben@example.org")
    numbers = json.loads(invoke(runner, "subscribers", "stats", "--json").stdout)
    assert numbers["total"] == 2
    assert numbers["by_status"] == {PENDING: 0, ACTIVE: 1, UNSUBSCRIBED: 1, BOUNCED: 0}
    assert sum(numbers["signups_by_month"].values()) == 2
    assert numbers["erased"] == 1
    shown = invoke(runner, "subscribers", "stats").stdout
    assert "aktiv" in shown and "Anmeldungen" in shown and "gelöscht" in shown


def test_prune_removes_only_expired_pending_signups(ws: Workspace, store: SubscriberStore, runner) -> None:
    old = now() - dt.timedelta(days=8)
    with store.change() as people:
        people.add("alt@example.org", subscribed_at=old, source="web")  # link sent at sign-up, expired
        people.add("frisch@example.org", source="web")
        people.add("aktiv@example.org", status=ACTIVE, subscribed_at=old)
        people.add("eingeladen@example.org", subscribed_at=old, invited_at=now())  # invited today
        people.add("von-hand@example.org", subscribed_at=old)  # never sent a link: kept
    would = invoke(runner, "subscribers", "prune", "--dry-run", "--json")
    assert json.loads(would.stdout) == {"dry_run": True, "confirm_days": 7, "removed": ["alt@example.org"]}
    assert store.load().get("alt@example.org") is not None
    result = invoke(runner, "subscribers", "prune")
    assert result.exit_code == 0 and "1 unbestätigte Anmeldung(en) älter als 7 Tage entfernt" in result.stdout
    assert sorted(p.email for p in store.load()) == ["aktiv@example.org", "eingeladen@example.org",
                                                     "frisch@example.org", "von-hand@example.org"]
    assert not store.backup_path.exists()  # no copy of the removed sign-up stays behind
