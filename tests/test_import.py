"""`newsletter subscribers import`: real-world CSV files in, a report out, nobody brought back."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from conftest import invoke

from newsletter.errors import CsvError
from newsletter.importer import import_csv, read_csv
from newsletter.subscribers import ACTIVE, BOUNCED, PENDING, UNSUBSCRIBED, SubscriberStore
from newsletter.workspace import Workspace


@pytest.fixture
def store(ws: Workspace) -> SubscriberStore:
    return SubscriberStore(ws.subscribers_path)


def rows_of(data: bytes) -> list[tuple[int, str, str]]:
    return [(row.row, row.email, row.name) for row in read_csv(data, "t.csv").rows]


# Reading the file


@pytest.mark.parametrize(("data", "encoding", "delimiter"), [
    ("E-Mail,Name\r\njörg@example.org,Jörg Größe\r\n".encode(), "UTF-8", ","),
    (b"\xef\xbb\xbf" + "email;name\njörg@example.org;Jörg Größe\n".encode(), "UTF-8 mit BOM", ";"),
    ("E-Mail;Name\r\njörg@example.org;Jörg Größe\r\n".encode("cp1252"), "Windows-1252", ";"),
    ("Email Address\tName\r\njörg@example.org\tJörg Größe\r\n".encode("utf-16"), "UTF-16", "\t"),
])
def test_encodings_and_delimiters_are_detected(data: bytes, encoding: str, delimiter: str) -> None:
    table = read_csv(data, "kontakte.csv")
    assert (table.encoding, table.delimiter) == (encoding, delimiter)
    assert [(r.email, r.name) for r in table.rows] == [("jörg@example.org", "Jörg Größe")]


@pytest.mark.parametrize("header", [
    "E-Mail;Name", "email;name", "Email Address;Name", "E-Mail-Adresse;Vollständiger Name",
    "EMAIL;NAME", " e-mail ;Name", "Ihre E-Mail;Name",
])
def test_header_names_are_matched_loosely(header: str) -> None:
    assert rows_of(f"{header}\nanna@example.org;Anna Berg\n".encode()) == [(2, "anna@example.org", "Anna Berg")]


def test_first_and_last_name_columns_are_joined() -> None:
    data = "Vorname;Nachname;E-Mail;Ort\nAnna;Berg;anna@example.org;Köln\n;Solo;solo@example.org;\n".encode()
    assert rows_of(data) == [(2, "anna@example.org", "Anna Berg"), (3, "solo@example.org", "Solo")]
    mailchimp = b"Email Address,First Name,Last Name,MEMBER_RATING\nben@example.org,Ben,Ott,2\n"
    assert rows_of(mailchimp) == [(2, "ben@example.org", "Ben Ott")]


def test_quoted_fields_blank_lines_and_row_numbers() -> None:
    data = ('email,name,notiz\n'
            '\n'
            'anna@example.org,"Berg, Anna","zwei\nZeilen"\n'
            '  \n'
            ',,\n'
            '"ben@example.org","Ben ""der Bär"" Ott",\n').encode()
    assert rows_of(data) == [(3, "anna@example.org", "Berg, Anna"),
                             (7, "ben@example.org", 'Ben "der Bär" Ott')]


def test_semicolon_file_with_commas_in_names() -> None:
    data = "E-Mail;Name\nanna@example.org;Berg, Anna\nben@example.org;Ott, Ben\n".encode("cp1252")
    assert rows_of(data) == [(2, "anna@example.org", "Berg, Anna"), (3, "ben@example.org", "Ott, Ben")]


def test_file_of_plain_addresses_without_header() -> None:
    assert rows_of(b"anna@example.org\n\nben@example.org\r\n") == [
        (1, "anna@example.org", ""), (3, "ben@example.org", "")]
    assert rows_of(b"Anna Berg;anna@example.org\n") == [(1, "anna@example.org", "Anna Berg")]


def test_address_with_display_name_in_one_cell() -> None:
    assert rows_of(b'E-Mail\n"Anna Berg" <anna@example.org>\n') == [
        (2, "anna@example.org", "Anna Berg")]


def _xlsx() -> bytes:
    from io import BytesIO
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
    return buffer.getvalue()


@pytest.mark.parametrize(("data", "message"), [
    (b"", "ist leer"),
    (b"\n\r\n  \n", "ist leer"),
    (b"\xef\xbb\xbfE-Mail;Name\r\n", "enthält keine Adressen, nur die Kopfzeile"),
    (b"Vorname;Ort\nAnna;K\xf6ln\n", "keine Spalte mit E-Mail-Adressen gefunden"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10", "keine Textdatei (Binärdaten)"),
    (bytes(range(256)) * 8, "keine Textdatei (Binärdaten)"),
    (b"\x01\x02\x03\x04\x05\x06\x07\x08abc@example.org" * 50, "keine Textdatei (Binärdaten)"),
    (_xlsx(), "ist eine Excel- oder ZIP-Datei"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "alte Excel-Datei (.xls)"),
    (b"\xef\xbb\xbfemail\n\xff\xfe\n", "als UTF-8 markiert"),
])
def test_unusable_files_give_one_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(CsvError, match=r"^kontakte\.csv: ") as caught:
        read_csv(data, "kontakte.csv")
    assert message in str(caught.value)


# Applying it to the list


def test_import_report_sorts_every_row(store: SubscriberStore) -> None:
    with store.change() as people:
        people.add("pending@example.org", "", PENDING)
        people.add("aktiv@example.org", "Aktiv Alt", ACTIVE)
        people.set_status(people.add("weg@example.org", "Weg", ACTIVE), UNSUBSCRIBED)
        people.set_status(people.add("bounce@example.org", "", ACTIVE), BOUNCED)
        people.add("geloescht@example.org")
        people.forget("geloescht@example.org")
    data = "\n".join([
        "E-Mail;Name",
        "Anna@Example.ORG;Anna Berg",       # 2 added
        "anna@example.org;Anna B.",         # 3 duplicate of row 2
        "kein-at-zeichen;Niemand",          # 4 invalid
        ";Nur Name",                        # 5 invalid (empty)
        "pending@example.org;Pia Pending",  # 6 updated: name filled in
        "aktiv@example.org;Aktiv Neu",      # 7 unchanged: the list wins
        "WEG@example.org;Weg",              # 8 unsubscribed
        "bounce@example.org;",              # 9 bounced
        "geloescht@example.org;Gelöscht",   # 10 erased
        "ben@example.org;Ben",              # 11 added
    ]).encode("cp1252")
    report = import_csv(store, read_csv(data, "k.csv"), source="Import k.csv")
    assert [(r.row, r.email) for r in report.added] == [(2, "Anna@example.org"), (11, "ben@example.org")]
    assert [(r.row, r.reason) for r in report.updated] == [(6, "Name ergänzt")]
    assert [r.row for r in report.unchanged] == [7]
    assert [(r.row, r.email, r.code, r.reason) for r in report.skipped] == [
        (3, "anna@example.org", "duplicate", "doppelt in der Datei (wie Zeile 2)"),
        (4, "kein-at-zeichen", "invalid", "ungültige Adresse"),
        (5, "", "invalid", "ungültige Adresse"),
        (8, "weg@example.org", "unsubscribed", "abgemeldet"),
        (9, "bounce@example.org", "bounced", "unzustellbar"),
        (10, "geloescht@example.org", "erased", "gelöscht"),
    ]
    people = store.load()
    assert people.get("anna@example.org").name == "Anna Berg"
    assert people.get("anna@example.org").status == PENDING
    assert people.get("anna@example.org").source == "Import k.csv"
    assert people.get("pending@example.org").name == "Pia Pending"
    assert people.get("aktiv@example.org").name == "Aktiv Alt"
    assert people.get("weg@example.org").status == UNSUBSCRIBED
    assert people.get("bounce@example.org").status == BOUNCED
    assert people.get("geloescht@example.org") is None
    assert len(people) == 6


def test_import_active_confirms_pending_but_never_reactivates(store: SubscriberStore) -> None:
    with store.change() as people:
        people.add("pending@example.org")
        people.set_status(people.add("weg@example.org", status=ACTIVE), UNSUBSCRIBED)
        people.set_status(people.add("bounce@example.org", status=ACTIVE), BOUNCED)
    data = b"email\npending@example.org\nweg@example.org\nbounce@example.org\nneu@example.org\n"
    report = import_csv(store, read_csv(data), status=ACTIVE)
    assert [r.reason for r in report.updated] == ["jetzt aktiv, ohne DOI-Nachweis"]
    assert [r.code for r in report.skipped] == ["unsubscribed", "bounced"]
    statuses = {p.email: p.status for p in store.load()}
    assert statuses == {"pending@example.org": ACTIVE, "weg@example.org": UNSUBSCRIBED,
                        "bounce@example.org": BOUNCED, "neu@example.org": ACTIVE}


def test_import_writes_once_under_one_lock(store: SubscriberStore) -> None:
    store.add("vorher@example.org")
    store.add("auch-vorher@example.org")
    before = store.path.read_bytes()
    data = "email\n" + "".join(f"person-{n}@example.org\n" for n in range(500))
    report = import_csv(store, read_csv(data.encode()))
    assert len(report.added) == 500
    assert store.backup_path.read_bytes() == before  # one write: the backup is the state before
    assert len(store.load()) == 502


def test_dry_run_writes_nothing(store: SubscriberStore) -> None:
    data = b"email\nanna@example.org\nanna@example.org\n"
    report = import_csv(store, read_csv(data), dry_run=True)
    assert report.dry_run and len(report.added) == 1 and len(report.skipped) == 1
    assert not store.path.exists()
    store.add("ben@example.org")
    before = store.path.stat()
    import_csv(store, read_csv(data), dry_run=True)
    after = store.path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_import_of_names_with_newline_and_script_keeps_them_as_flat_data(store: SubscriberStore) -> None:
    data = b'email,name\nx@example.org,"Eva\nBcc: boese@example.com <script>alert(1)</script>"\n'
    import_csv(store, read_csv(data))
    name = store.load().get("x@example.org").name
    assert name == "Eva Bcc: boese@example.com <script>alert(1)</script>"


# The command


def test_import_command_prints_report(ws: Workspace, store: SubscriberStore, runner) -> None:
    csv_file = ws.root / "kontakte.csv"
    csv_file.write_bytes(b"\xef\xbb\xbf" + "E-Mail;Vorname;Nachname\r\n"
                         "joerg@example.org;Jörg;Größe\r\nJOERG@example.org;J;G\r\nkaputt@;X;Y\r\n"
                         "jörg@example.org;Jörg;Umlaut\r\n".encode())
    result = invoke(runner, "subscribers", "import", str(csv_file))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "UTF-8 mit BOM, Semikolon, 4 Zeilen" in out
    assert "Zeile 3: JOERG@example.org: doppelt in der Datei (wie Zeile 2)" in out
    assert "Zeile 4: kaputt@: ungültige Adresse" in out
    assert "Zeile 5: jörg@example.org: ungültige Adresse" in out  # no SMTPUTF8: ASCII before the @
    assert "unbestätigt (pending)" in out
    person = store.load().get("joerg@example.org")
    assert (person.name, person.status, person.source) == ("Jörg Größe", PENDING, "Import kontakte.csv")


def test_import_command_dry_run_and_json(ws: Workspace, store: SubscriberStore, runner) -> None:
    csv_file = ws.root / "liste.csv"
    csv_file.write_text("anna@example.org\nben@example.org\n")
    result = invoke(runner, "subscribers", "import", str(csv_file), "--dry-run", "--status", "active")
    assert result.exit_code == 0 and "Probelauf: nichts wurde gespeichert." in result.stdout
    assert not store.path.exists()
    result = invoke(runner, "subscribers", "import", str(csv_file), "--status", "active",
                    "--source", "alte Liste", "--json")
    report = json.loads(result.stdout)
    assert report["counts"] == {"added": 2, "updated": 0, "unchanged": 0, "skipped": 0}
    assert report["added"][0] == {"row": 1, "email": "anna@example.org", "code": "", "outcome": "added",
                                  "reason": "aktiv, ohne DOI-Nachweis", "file": str(csv_file),
                                  "status": "active", "proof": "missing"}
    assert report["files"][0]["format"] == "Adressliste"
    assert [p.status for p in store.active()] == [ACTIVE, ACTIVE]
    again = json.loads(invoke(runner, "subscribers", "import", str(csv_file), "--json").stdout)
    assert again["counts"]["unchanged"] == 2


@pytest.mark.parametrize(("content", "message"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "keine Textdatei (Binärdaten)"),
    (b"E-Mail;Name\n", "nur die Kopfzeile"),
    (None, "Datei nicht gefunden"),
])
def test_import_command_refuses_unusable_file(ws: Workspace, store: SubscriberStore, runner,
                                              content: bytes | None, message: str) -> None:
    path = ws.root / "daten.csv"
    if content is not None:
        path.write_bytes(content)
    result = invoke(runner, "subscribers", "import", str(path))
    assert result.exit_code == 1
    assert result.stderr == f"Fehler: {path}: {result.stderr.split(': ', 2)[2]}"
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output and not store.path.exists()


def test_import_command_rejects_status_unsubscribed(ws: Workspace, runner) -> None:
    (ws.root / "a.csv").write_text("anna@example.org\n")
    result = invoke(runner, "subscribers", "import", str(ws.root / "a.csv"), "--status", "bounced")
    assert result.exit_code == 2


def test_import_of_a_folder_is_a_clear_error(ws: Workspace, runner) -> None:
    result = invoke(runner, "subscribers", "import", str(ws.root / "issues"))
    assert result.exit_code == 1 and "ist ein Ordner" in result.stderr


def test_imported_people_appear_in_list(ws: Workspace, runner, tmp_path: Path) -> None:
    csv_file = tmp_path / "k.csv"
    csv_file.write_bytes("Name,E-Mail\n\"Müller, Jörg\",joerg@example.org\n".encode("cp1252"))
    assert invoke(runner, "subscribers", "import", str(csv_file)).exit_code == 0
    records = json.loads(invoke(runner, "subscribers", "list", "--json").stdout)
    assert [(r["email"], r["name"], r["status"]) for r in records] == [
        ("joerg@example.org", "Müller, Jörg", PENDING)]


def test_a_status_column_is_respected_never_reactivating_anyone(ws, runner, tmp_path) -> None:
    """A Mailchimp-style export: who left there is stored as having left, never as active."""
    with SubscriberStore(ws.subscribers_path).change() as people:
        people.add("schon@example.org", "Schon Da", "active")
    csv_file = tmp_path / "mailchimp.csv"
    csv_file.write_text("Email Address,First Name,Last Name,Member Status\n"
                        "aktiv@example.org,Ada,Aktiv,subscribed\n"
                        "weg@example.org,Wim,Weg,unsubscribed\n"
                        "kaputt@example.org,Kai,Kaputt,cleaned\n"
                        "offen@example.org,Ole,Offen,pending\n"
                        "schon@example.org,Schon,Da,unsubscribed\n", encoding="utf-8")
    result = invoke(runner, "subscribers", "import", str(csv_file), "--status", "active", "--json")
    assert result.exit_code == 0, result.output
    people = SubscriberStore(ws.subscribers_path).load()
    status = {p.email: p.status for p in people}
    assert status == {"schon@example.org": "unsubscribed", "aktiv@example.org": "active",
                      "weg@example.org": "unsubscribed", "kaputt@example.org": "bounced",
                      "offen@example.org": "pending"}
    again = invoke(runner, "subscribers", "import", str(csv_file), "--status", "active", "--json")
    assert {p.email: p.status for p in SubscriberStore(ws.subscribers_path).load()} == status
    assert again.exit_code == 0


def test_an_unknown_status_stops_the_import_naming_the_line(ws, runner, tmp_path) -> None:
    store = SubscriberStore(ws.subscribers_path)
    store.add("schon@example.org")
    before = store.path.read_bytes()
    csv_file = tmp_path / "mailchimp.csv"
    csv_file.write_text("Email Address,Member Status\naktiv@example.org,subscribed\nseltsam@example.org,VIP\n")
    result = invoke(runner, "subscribers", "import", str(csv_file), "--status", "active")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr == (f"Fehler: {csv_file}: Zeile 3, Spalte „Member Status“: Status „VIP“ ist unbekannt "
                             "(bekannt sind z. B. subscribed, unsubscribed, cleaned, pending, aktiv, abgemeldet); "
                             "bitte in aktiv, unbestätigt, abgemeldet oder unzustellbar ändern\n")
    assert store.path.read_bytes() == before
