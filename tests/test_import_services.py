"""Moving in from another service: each export as that service writes it, consent kept, nobody brought back.

The export files are written here, with each service's real column names and order: Mailchimp
(single CSVs and the export zip, English and German headers), CleverReach, rapidmail, Brevo,
listmonk, Keila, this tool's own export and a German Excel sheet.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import invoke

from newsletter.importer import import_tables, read_import_files
from newsletter.subscribers import (
    ACTIVE,
    BOUNCED,
    IMPORTED,
    NO_PROOF,
    PENDING,
    UNSUBSCRIBED,
    Subscriber,
    SubscriberStore,
    proof_of_consent,
)
from newsletter.workspace import Workspace

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")

MAILCHIMP_HEAD = ('"Email Address","First Name","Last Name",Address,"Phone Number",Birthday,MEMBER_RATING,'
                  "OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,REGION")
MAILCHIMP_TAIL = "LAST_CHANGED,LEID,EUID,NOTES,TAGS"


def mailchimp(kind: str, rows: list[str]) -> bytes:
    """A Mailchimp audience export file as Mailchimp writes it: its columns, quoted times, CRLF."""
    middle = {"subscribed": "", "unsubscribed": "UNSUB_TIME,UNSUB_CAMPAIGN_TITLE,UNSUB_CAMPAIGN_ID,UNSUB_REASON,"
              "UNSUB_REASON_OTHER,", "cleaned": "CLEAN_TIME,CLEAN_CAMPAIGN_TITLE,CLEAN_CAMPAIGN_ID,"}[kind]
    return "\r\n".join([f"{MAILCHIMP_HEAD},{middle}{MAILCHIMP_TAIL}", *rows, ""]).encode()


SUBSCRIBED = mailchimp("subscribed", [
    # double opt-in with evidence
    'anna@example.org,Anna,Berg,,,,4,"2024-03-15 09:12:33",192.0.2.10,"2024-03-15 09:14:02",192.0.2.11,'
    '52.5200000,13.4050000,1,2,Europe/Berlin,DE,BE,"2024-03-15 09:14:02",11223344,a1b2c3d4e5,"kam über den Vortrag",'
    '"""Praxis"",""Workshop"""',
    # added by an admin: a confirmation time but no opt-in
    'admin@example.org,Ada,Admin,,,,2,,,"2024-04-01 10:00:00",,,,,,,,,"2024-04-01 10:00:00",11223345,b1b2c3d4e5,,',
    # in the unsubscribed file too
    'beides@example.org,Bea,Beides,,,,2,"2024-01-02 08:00:00",192.0.2.20,"2024-01-02 08:05:00",192.0.2.20,,,,,,,,'
    '"2024-01-02 08:05:00",11223346,c1b2c3d4e5,,',
])
UNSUBSCRIBED_FILE = mailchimp("unsubscribed", [
    'nie@example.org,Nina,Nie,,,,1,,,"2023-05-01 12:00:00",,,,,,,,,"2024-02-10 18:30:00","Impuls Februar",'
    'abc123,"Ich habe mich nie angemeldet",,"2024-02-10 18:30:00",11223347,d1b2c3d4e5,,',
    'beides@example.org,Bea,Beides,,,,2,"2024-01-02 08:00:00",192.0.2.20,"2024-01-02 08:05:00",192.0.2.20,,,,,,,,'
    '"2024-06-01 07:00:00","Impuls Juni",abc124,"Zu viele E-Mails",,"2024-06-01 07:00:00",11223346,c1b2c3d4e5,,',
])
CLEANED = mailchimp("cleaned", [
    'tot@example.org,Tom,Tot,,,,1,"2023-01-01 10:00:00",192.0.2.40,"2023-01-01 10:02:00",192.0.2.40,,,,,,,,'
    '"2024-05-05 05:05:05","Impuls Mai",def456,"2024-05-05 05:05:05",11223348,e1b2c3d4e5,,',
])
ZIP_ID = "4f2a9c1b7d"


def mailchimp_zip(path: Path, order: tuple[str, ...] = ("subscribed", "unsubscribed", "cleaned")) -> Path:
    files = {"subscribed": SUBSCRIBED, "unsubscribed": UNSUBSCRIBED_FILE, "cleaned": CLEANED}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for kind in order:
            archive.writestr(f"{kind}_members_export_{ZIP_ID}.csv", files[kind])
    return path


@pytest.fixture
def store(ws: Workspace) -> SubscriberStore:
    return SubscriberStore(ws.subscribers_path)


def imported(person: Subscriber):
    return [event for event in person.events if event.kind == IMPORTED]


def at(*parts: int, zone: dt.tzinfo = UTC) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=zone)


# Mailchimp


def test_mailchimp_zip_keeps_every_consent_time_and_every_unsubscribe(ws, store, runner, tmp_path) -> None:
    archive = mailchimp_zip(tmp_path / f"members_export_{ZIP_ID}.zip")
    result = invoke(runner, "subscribers", "import", str(archive), "--status", "active", "--json")
    assert result.exit_code == 0, result.output
    people = store.load()
    anna = people.get("anna@example.org")
    assert (anna.status, anna.name) == (ACTIVE, "Anna Berg")
    assert (anna.subscribed_at, anna.signup_ip) == (at(2024, 3, 15, 9, 12, 33), "192.0.2.10")
    assert (anna.confirmed_at, anna.confirm_ip) == (at(2024, 3, 15, 9, 14, 2), "192.0.2.11")
    assert anna.note == "kam über den Vortrag; Tags: Praxis, Workshop"
    assert proof_of_consent(anna) == "doi"
    [event] = imported(anna)
    assert (event.file, event.line) == (f"members_export_{ZIP_ID}.zip/subscribed_members_export_{ZIP_ID}.csv", 2)
    assert (event.format, event.file_status) == ("Mailchimp", "subscribed_members_export")
    assert (event.signup_at, event.confirmed_at, event.status) == (anna.subscribed_at, anna.confirmed_at, ACTIVE)
    assert event.at.date() == dt.datetime.now(UTC).date()  # the import is dated today, as the import

    admin = people.get("admin@example.org")  # Mailchimp's mark of a contact an admin added
    assert admin.status == ACTIVE and proof_of_consent(admin) == NO_PROOF
    assert admin.subscribed_at is None and admin.confirmed_at == at(2024, 4, 1, 10, 0)

    nie = people.get("nie@example.org")
    assert nie.status == UNSUBSCRIBED and nie.unsubscribed_at == at(2024, 2, 10, 18, 30)
    assert imported(nie)[0].reason == "Ich habe mich nie angemeldet; Kampagne „Impuls Februar“"
    beides = people.get("beides@example.org")  # subscribed in one file, unsubscribed in another
    assert beides.status == UNSUBSCRIBED and beides.unsubscribed_at == at(2024, 6, 1, 7, 0)
    tot = people.get("tot@example.org")
    assert tot.status == BOUNCED and tot.bounced_at == at(2024, 5, 5, 5, 5, 5)
    # Nobody got a confirmation the file did not give.
    stated = {"anna@example.org": at(2024, 3, 15, 9, 14, 2), "admin@example.org": at(2024, 4, 1, 10, 0),
              "nie@example.org": at(2023, 5, 1, 12, 0), "beides@example.org": at(2024, 1, 2, 8, 5),
              "tot@example.org": at(2023, 1, 1, 10, 2)}
    assert {p.email: p.confirmed_at for p in people} == stated

    report = json.loads(result.stdout)
    files = {Path(f["filename"]).name: f for f in report["files"]}
    assert files[f"subscribed_members_export_{ZIP_ID}.csv"]["format"] == \
        "Mailchimp (angemeldet laut subscribed_members_export)"
    assert files[f"unsubscribed_members_export_{ZIP_ID}.csv"]["format"] == \
        "Mailchimp (abgemeldet laut unsubscribed_members_export)"
    assert files[f"subscribed_members_export_{ZIP_ID}.csv"]["counts"] == {
        "added": 2, "updated": 0, "unchanged": 0, "skipped": 1}
    assert files[f"unsubscribed_members_export_{ZIP_ID}.csv"]["added_by_status"] == {
        "active": 0, "pending": 0, "unsubscribed": 2, "bounced": 0}
    assert files[f"cleaned_members_export_{ZIP_ID}.csv"]["added_by_status"]["bounced"] == 1
    skipped = report["skipped"]
    assert [(s["email"], s["reason"]) for s in skipped] == [
        ("beides@example.org", f"abgemeldet (laut members_export_{ZIP_ID}.zip/unsubscribed_members_export_{ZIP_ID}"
                               ".csv, Zeile 3)")]
    assert [r["email"] for r in report["without_proof"]] == ["admin@example.org"]


@pytest.mark.parametrize("order", [("unsubscribed", "subscribed", "cleaned"),
                                   ("cleaned", "subscribed", "unsubscribed")])
def test_the_order_of_the_files_in_the_zip_changes_nothing(store, tmp_path, order) -> None:
    tables = read_import_files([mailchimp_zip(tmp_path / "export.zip", order)])
    import_tables(store, tables, ACTIVE)
    assert {p.email: p.status for p in store.load()} == {
        "anna@example.org": ACTIVE, "admin@example.org": ACTIVE, "beides@example.org": UNSUBSCRIBED,
        "nie@example.org": UNSUBSCRIBED, "tot@example.org": BOUNCED}


def test_reimporting_the_subscribed_file_after_the_unsubscribed_one_changes_no_one_back(ws, store, runner,
                                                                                      tmp_path) -> None:
    unsubscribed = tmp_path / f"unsubscribed_members_export_{ZIP_ID}.csv"
    unsubscribed.write_bytes(UNSUBSCRIBED_FILE)
    subscribed = tmp_path / f"subscribed_members_export_{ZIP_ID}.csv"
    subscribed.write_bytes(SUBSCRIBED)
    cleaned = tmp_path / "export-bereinigt.csv"  # renamed: the CLEAN_TIME column still says what it is
    cleaned.write_bytes(CLEANED)
    for path in (unsubscribed, cleaned, subscribed):
        assert invoke(runner, "subscribers", "import", str(path), "--status", "active").exit_code == 0
    settled = store.path.read_bytes()
    for path in (subscribed, unsubscribed, cleaned, subscribed):
        result = invoke(runner, "subscribers", "import", str(path), "--status", "active")
        assert result.exit_code == 0, result.output
    assert store.path.read_bytes() == settled  # nothing new: not even a line of history
    people = store.load()
    assert people.get("beides@example.org").status == UNSUBSCRIBED
    assert people.get("nie@example.org").status == UNSUBSCRIBED
    assert people.get("tot@example.org").status == BOUNCED
    result = invoke(runner, "subscribers", "import", str(subscribed), "--status", "active")
    assert "Zeile 4: beides@example.org: abgemeldet" in result.stdout
    assert "Format: Mailchimp (angemeldet laut subscribed_members_export)" in result.stdout


def test_an_unsubscribed_file_leaves_people_already_on_the_list_left(store, tmp_path) -> None:
    with store.change() as people:
        people.add("beides@example.org", "Bea", ACTIVE)
        people.add("nie@example.org", "Nina", PENDING)
    path = tmp_path / "unsubscribed_members_export_1.csv"
    path.write_bytes(UNSUBSCRIBED_FILE)
    report = import_tables(store, read_import_files([path]), ACTIVE)
    assert [(r.email, r.reason) for r in report.updated] == [("nie@example.org", "abgemeldet (laut Datei)"),
                                                            ("beides@example.org", "abgemeldet (laut Datei)")]
    people = store.load()
    assert people.get("beides@example.org").unsubscribed_at == at(2024, 6, 1, 7, 0)
    assert [e.kind for e in people.get("nie@example.org").events] == ["added", IMPORTED]


def test_a_later_import_only_appends_and_overwrites_nothing(store, tmp_path) -> None:
    store.add("clara@example.org", "Clara", source="Visitenkarte")
    clever = tmp_path / "cleverreach.csv"
    clever.write_text("email;registered;activated;deactivated;source\n"
                      "clara@example.org;1710493953;1710494100;0;Formular\n")
    report = import_tables(store, read_import_files([clever]), PENDING)
    assert [r.reason for r in report.updated] == ["Anmelde- und Bestätigungsdaten der Datei ergänzt, "
                                                  "jetzt aktiv, Double-Opt-in belegt"]
    first = store.load().get("clara@example.org")
    assert (first.status, first.confirmed_at) == (ACTIVE, at(2024, 3, 15, 9, 15))
    assert first.source == "Visitenkarte" and first.name == "Clara"
    other = tmp_path / "subscribed_members_export_2.csv"
    other.write_bytes(mailchimp("subscribed", [
        'clara@example.org,Clara,Neu,,,,2,"2023-01-01 10:00:00",192.0.2.60,"2023-01-01 10:01:00",192.0.2.61,,,,,,,,'
        '"2023-01-01 10:01:00",1,x,,']))
    import_tables(store, read_import_files([other]), PENDING)
    later = store.load().get("clara@example.org")
    assert later.events[:2] == first.events  # what was stored stays as it was
    assert [e.kind for e in later.events] == ["added", IMPORTED, IMPORTED]
    assert later.events[-1].signup_ip == "192.0.2.60"  # the new file's evidence, kept beside the old
    assert (later.name, later.confirmed_at, later.signup_ip) == ("Clara", first.confirmed_at, "")  # nothing overwritten


def test_mailchimp_with_german_headers_as_a_single_csv(ws, store, runner, tmp_path) -> None:
    path = tmp_path / "mailchimp-export.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (
        '"E-Mail-Adresse",Vorname,Nachname,Adresse,Telefonnummer,Geburtstag,MEMBER_RATING,OPTIN_TIME,OPTIN_IP,'
        "CONFIRM_TIME,CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,REGION,LAST_CHANGED,LEID,EUID,NOTES,"
        'TAGS\r\njoerg@example.org,Jörg,Größe,"Lindenallee 1, 10115 Berlin",,,3,"2024-10-27 01:30:00",'
        '192.0.2.50,"2024-10-27 02:30:00",192.0.2.51,,,,,,,,"2024-10-27 02:30:00",1,f1,,\r\n').encode())
    result = invoke(runner, "subscribers", "import", str(path))
    assert result.exit_code == 0, result.output
    assert "Format: Mailchimp" in result.stdout and "UTF-8 mit BOM, Komma, 1 Zeile)" in result.stdout
    joerg = store.load().get("joerg@example.org")
    # Evidence of a double opt-in: active without --status active; Mailchimp's times are UTC.
    assert (joerg.status, joerg.name) == (ACTIVE, "Jörg Größe")
    assert (joerg.subscribed_at, joerg.confirmed_at) == (at(2024, 10, 27, 1, 30), at(2024, 10, 27, 2, 30))


# The other services


def test_cleverreach_epoch_and_german_dates(store, tmp_path) -> None:
    path = tmp_path / "cleverreach_export.csv"
    path.write_bytes("email;registered;activated;deactivated;source;vorname;nachname;anrede\r\n"
                     "clara@example.org;1710493953;1710494100;0;Anmeldeformular Website;Clara;Clever;Frau\r\n"
                     "offen@example.org;1710500000;0;0;Import;Otto;Offen;Herr\r\n"
                     "weg@example.org;15.01.2024 10:00;15.01.2024 10:05;01.03.2024 12:00;Formular;Wera;Weg;Frau\r\n"
                     .encode("cp1252"))
    [table] = read_import_files([path])
    assert table.format == "CleverReach" and table.encoding == "UTF-8"
    import_tables(store, [table], ACTIVE)
    people = store.load()
    clara = people.get("clara@example.org")
    assert (clara.status, clara.name) == (ACTIVE, "Clara Clever")
    assert (clara.subscribed_at, clara.confirmed_at) == (at(2024, 3, 15, 9, 12, 33), at(2024, 3, 15, 9, 15))
    assert imported(clara)[0].source == "Anmeldeformular Website"
    offen = people.get("offen@example.org")  # never activated there: stays unconfirmed here
    assert (offen.status, offen.confirmed_at) == (PENDING, None)
    weg = people.get("weg@example.org")
    assert weg.status == UNSUBSCRIBED
    assert weg.unsubscribed_at == at(2024, 3, 1, 12, 0, zone=BERLIN) == at(2024, 3, 1, 11, 0)
    assert weg.subscribed_at.utcoffset() == dt.timedelta(hours=1)  # German time, as written, with its offset


def test_rapidmail_statuses_times_and_ips(store, tmp_path) -> None:
    head = ("email;firstname;lastname;gender;title;zip;birthdate;status;created;created_ip;created_host;"
            "activated;activated_ip;activated_host;updated;foreign_id")
    rows = ["r1@example.org;Rita;Rapid;female;;10115;;active;2024-07-15 10:12:33;192.0.2.30;;"
            "2024-07-15 10:20:00;192.0.2.31;;2024-07-15 10:20:00;",
            "r2@example.org;Rolf;Neu;male;;;;new;2024-07-16 08:00:00;192.0.2.32;;0000-00-00 00:00:00;;;;",
            "r3@example.org;;;;;;;bounced;2023-01-01 08:00:00;;;2023-01-01 08:05:00;;;;",
            "r4@example.org;;;;;;;abused;2023-01-01 08:00:00;;;2023-01-01 08:05:00;;;;",
            "r5@example.org;;;;;;;deleted;2023-01-01 08:00:00;;;2023-01-01 08:05:00;;;;"]
    path = tmp_path / "rapidmail_recipients.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join([head, *rows]).encode())
    [table] = read_import_files([path])
    assert table.format == "rapidmail"
    import_tables(store, [table], ACTIVE)
    people = store.load()
    rita = people.get("r1@example.org")
    assert rita.status == ACTIVE and proof_of_consent(rita) == "doi"
    assert (rita.subscribed_at, rita.signup_ip) == (at(2024, 7, 15, 10, 12, 33, zone=BERLIN), "192.0.2.30")
    assert (rita.confirmed_at, rita.confirm_ip) == (at(2024, 7, 15, 8, 20), "192.0.2.31")  # summer time: +2
    rolf = people.get("r2@example.org")
    assert (rolf.status, rolf.confirmed_at) == (PENDING, None)
    assert [people.get(f"r{n}@example.org").status for n in (3, 4, 5)] == [BOUNCED, UNSUBSCRIBED, UNSUBSCRIBED]


def test_brevo_semicolons_cp1252_german_headers_and_blacklist(store, tmp_path) -> None:
    path = tmp_path / "brevo_contacts.csv"
    path.write_bytes("CONTACT ID;EMAIL;NACHNAME;VORNAME;SMS;ADDED_TIME;MODIFIED_TIME;EMAIL_BLACKLISTED;"
                     "SMS_BLACKLISTED\r\n"
                     "1;b1@example.org;Müller;Jörg;;2024-03-15 09:00:00;2024-03-16 10:00:00;No;No\r\n"
                     "2;b2@example.org;Weiß;Grete;;2024-03-15 09:30:00;2024-04-01 10:00:00;Yes;No\r\n"
                     "3;b3@example.org;Öz;Ümit;+491701234567;2024-03-15 10:00:00;2024-03-15 10:00:00;No;Yes\r\n"
                     .encode("cp1252"))
    [table] = read_import_files([path])
    assert (table.format, table.encoding, table.delimiter) == ("Brevo", "Windows-1252", ";")
    import_tables(store, [table], ACTIVE)
    people = store.load()
    joerg = people.get("b1@example.org")
    assert (joerg.name, joerg.status) == ("Jörg Müller", ACTIVE)
    assert joerg.subscribed_at == at(2024, 3, 15, 9, 0, zone=BERLIN)
    assert joerg.confirmed_at is None and proof_of_consent(joerg) == NO_PROOF  # Brevo gives no confirmation
    assert people.get("b2@example.org").status == UNSUBSCRIBED
    assert people.get("b3@example.org").status == ACTIVE  # blacklisted for SMS only


def test_listmonk_statuses_and_go_timestamps(store, tmp_path) -> None:
    path = tmp_path / "subscribers.csv"
    path.write_text('uuid,email,name,attributes,status,created_at,updated_at\n'
                    '6a1f0d2c-1b3e-4c5d-8e9f-0a1b2c3d4e5f,l1@example.org,Lena List,"{""city"": ""Köln""}",enabled,'
                    '2024-03-15 09:12:33.123456 +0000 UTC,2024-03-16 10:00:00.5 +0000 UTC\n'
                    '7b2f0d2c-1b3e-4c5d-8e9f-0a1b2c3d4e5f,l2@example.org,Lars,{},blocklisted,'
                    '2024-03-15 09:12:33 +0100 CET,2024-03-16 10:00:00 +0100 CET\n'
                    '8c3f0d2c-1b3e-4c5d-8e9f-0a1b2c3d4e5f,l3@example.org,,{},disabled,'
                    '2024-03-15 09:12:33 +0000 +0000,2024-03-16 10:00:00 +0000 +0000\n', encoding="utf-8")
    [table] = read_import_files([path])
    assert table.format == "listmonk"
    import_tables(store, [table], PENDING)
    people = store.load()
    lena = people.get("l1@example.org")
    assert (lena.status, lena.name) == (PENDING, "Lena List")  # created, but no confirmation time: not proven
    assert lena.subscribed_at == dt.datetime(2024, 3, 15, 9, 12, 33, 123456, tzinfo=UTC)
    assert people.get("l2@example.org").subscribed_at == at(2024, 3, 15, 8, 12, 33)
    assert [people.get(e).status for e in ("l2@example.org", "l3@example.org")] == [UNSUBSCRIBED, UNSUBSCRIBED]


def test_keila_with_and_without_status(store, tmp_path) -> None:
    path = tmp_path / "contacts_p_abc.csv"
    path.write_text('Email,First name,Last name,Data,Status\r\n'
                    'k1@example.org,Kim,Keila,"{""tag"":""Praxis""}",active\r\n'
                    'k2@example.org,Kai,,,unsubscribed\r\n'
                    'k3@example.org,,,,unreachable\r\n', encoding="utf-8")
    [table] = read_import_files([path])
    assert table.format == "Keila"
    import_tables(store, [table], ACTIVE)
    assert {p.email: (p.status, p.name) for p in store.load()} == {
        "k1@example.org": (ACTIVE, "Kim Keila"), "k2@example.org": (UNSUBSCRIBED, "Kai"),
        "k3@example.org": (BOUNCED, "")}


def test_german_excel_sheet_with_a_signup_date_keeps_the_date_and_invents_no_time(ws, store, runner,
                                                                                tmp_path) -> None:
    path = tmp_path / "Anmeldezettel.csv"
    path.write_bytes("Vorname;Nachname;E-Mail;Anmeldung am;Bemerkung\r\n"
                     "Jörg;Größe;joerg@example.org;15.03.2024;Praxis, Flyer\r\n"
                     "Anna;Öztürk;anna@example.org;15.03.2024 09:12;\r\n"
                     "Ben;Ohne;ben@example.org;;\r\n".encode("cp1252"))
    result = invoke(runner, "subscribers", "import", str(path))
    assert result.exit_code == 0, result.output
    assert "Format: Tabelle" in result.stdout and "Windows-1252, Semikolon, 3 Zeilen" in result.stdout
    people = store.load()
    joerg = people.get("joerg@example.org")
    assert (joerg.status, joerg.subscribed_at, joerg.confirmed_at) == (PENDING, dt.date(2024, 3, 15), None)
    assert joerg.note == "Praxis, Flyer"
    assert people.get("anna@example.org").subscribed_at == at(2024, 3, 15, 9, 12, zone=BERLIN)
    assert people.get("ben@example.org").subscribed_at is None  # the file gives none: none is made up
    assert "subscribed_at = 2024-03-15\n" in store.path.read_text(encoding="utf-8")
    stats = json.loads(invoke(runner, "subscribers", "stats", "--json").stdout)
    assert stats["signups_by_month"] == {"2024-03": 2} and stats["undated"] == 1
    assert stats["without_proof"] == 3
    listed = invoke(runner, "subscribers", "list").stdout
    assert "15.03.2024" in listed
    assert "Kein DOI-Nachweis (3)" in result.stdout and "invite --without-proof" in result.stdout


def test_a_yes_no_column_named_like_a_date_is_read_as_yes_or_no(store, tmp_path) -> None:
    path = tmp_path / "liste.csv"
    path.write_text("E-Mail;abgemeldet;angemeldet\nja@example.org;ja;x\nnein@example.org;nein;x\n")
    import_tables(store, read_import_files([path]), ACTIVE)
    people = store.load()
    assert people.get("ja@example.org").status == UNSUBSCRIBED
    assert people.get("ja@example.org").unsubscribed_at is None  # left, but the file says not when
    assert people.get("nein@example.org").status == ACTIVE


def test_own_export_moves_with_its_history(ws, store, runner, tmp_path) -> None:
    mailchimp = tmp_path / f"subscribed_members_export_{ZIP_ID}.csv"
    mailchimp.write_bytes(SUBSCRIBED)
    assert invoke(runner, "subscribers", "import", str(mailchimp), "--status", "active").exit_code == 0
    store.unsubscribe("admin@example.org")
    target = tmp_path / "umzug.csv"
    assert invoke(runner, "subscribers", "export", str(target), "--excel").exit_code == 0
    other = tmp_path / "neu"
    invoke(runner, "init", str(other))
    result = invoke(runner, "--workspace", str(other), "subscribers", "import", str(target), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["files"][0]["format"] == "Export dieses Programms"
    moved = SubscriberStore(other / "subscribers" / "subscribers.toml").load()
    for before in store.load():
        after = moved.get(before.email)
        assert (after.id, after.status, after.subscribed_at, after.confirmed_at, after.unsubscribed_at) == (
            before.id, before.status, before.subscribed_at, before.confirmed_at, before.unsubscribed_at)
        assert after.events[:-1] == before.events  # the history as it was, then the move
        assert (after.events[-1].kind, after.events[-1].file) == (IMPORTED, "umzug.csv")
        assert proof_of_consent(after) == proof_of_consent(before)


# Bad input: one line per problem, exit 1, nothing written


def _refused(runner, store: SubscriberStore, *paths: Path) -> list[str]:
    before = store.path.read_bytes()
    result = invoke(runner, "subscribers", "import", *map(str, paths), "--status", "active")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert store.path.read_bytes() == before  # unchanged, byte for byte
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert all(line.startswith("Fehler: ") for line in lines)
    return [line.removeprefix("Fehler: ") for line in lines]


def test_a_zip_without_csv_is_refused(store, runner, tmp_path) -> None:
    store.add("schon@example.org")
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("LIESMICH.txt", "Ihr Export")
        zipped.writestr("kontakte.xlsx", b"PK\x03\x04")
    assert _refused(runner, store, archive) == [f"{archive}: enthält keine CSV-Datei (darin: LIESMICH.txt, "
                                                "kontakte.xlsx)"]


def test_an_excel_file_named_zip_and_a_broken_zip_are_refused(store, runner, tmp_path) -> None:
    store.add("schon@example.org")
    excel = tmp_path / "kontakte.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("[Content_Types].xml", "<Types/>")
        zipped.writestr("xl/workbook.xml", "<workbook/>")
    excel.write_bytes(buffer.getvalue())
    broken = tmp_path / "abgebrochen.zip"
    broken.write_bytes(buffer.getvalue()[:40])
    assert _refused(runner, store, excel, broken) == [
        f"{excel}: ist eine Excel-Datei, keine CSV-Datei. In Excel: „Speichern unter“ → „CSV UTF-8 (durch "
        "Trennzeichen getrennt)“.",
        f"{broken}: ist keine lesbare ZIP-Datei (beschädigt oder unvollständig geladen?)"]


def test_an_unknown_service_with_a_status_column_in_another_language_is_refused(store, runner, tmp_path) -> None:
    store.add("schon@example.org")
    french = tmp_path / "export-fr.csv"
    french.write_text("Adresse e-mail;Prénom;Statut\nx@example.org;Xavier;résilié\ny@example.org;Yves;abonné\n"
                      "z@example.org;Zoé;en sommeil\n", encoding="utf-8")
    spanish = tmp_path / "export-es.csv"
    spanish.write_text("email,nombre,estado\nana@example.org,Ana,inactivo definitivo\n", encoding="utf-8")
    assert _refused(runner, store, french, spanish) == [
        f"{french}: Zeile 2, Spalte „Statut“: Status „résilié“ ist unbekannt (bekannt sind z. B. subscribed, "
        "unsubscribed, cleaned, pending, aktiv, abgemeldet); bitte in aktiv, unbestätigt, abgemeldet oder "
        "unzustellbar ändern",
        f"{french}: Zeile 4, Spalte „Statut“: Status „en sommeil“ ist unbekannt (bekannt sind z. B. subscribed, "
        "unsubscribed, cleaned, pending, aktiv, abgemeldet); bitte in aktiv, unbestätigt, abgemeldet oder "
        "unzustellbar ändern",
        f"{spanish}: Zeile 2, Spalte „estado“: Status „inactivo definitivo“ ist unbekannt (bekannt sind z. B. "
        "subscribed, unsubscribed, cleaned, pending, aktiv, abgemeldet); bitte in aktiv, unbestätigt, abgemeldet "
        "oder unzustellbar ändern"]


def test_impossible_dates_are_refused_each_with_its_line(store, runner, tmp_path) -> None:
    store.add("schon@example.org")
    sheet = tmp_path / "liste.csv"
    sheet.write_text("E-Mail;Anmeldung am;bestätigt am\n"
                     "a@example.org;31.02.2024;\n"
                     "b@example.org;15.03.2024;03/04/2024\n"
                     "c@example.org;gestern;\n"
                     "d@example.org;15.03.2024;15.03.2024 10:00\n", encoding="utf-8")
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("subscribed_members_export_1.csv", mailchimp("subscribed", [
            'e@example.org,Eva,,,,,2,"2024-13-45 10:00:00",,,,,,,,,,,,1,x,,']))
    assert _refused(runner, store, sheet, archive) == [
        f"{sheet}: Zeile 2, Spalte „Anmeldung am“: „31.02.2024“ gibt es nicht (Tag, Monat oder Uhrzeit außerhalb "
        "des Kalenders)",
        f"{sheet}: Zeile 3, Spalte „bestätigt am“: „03/04/2024“ ist nicht eindeutig (Tag und Monat vertauschbar); "
        "bitte als 15.03.2024 oder 2024-03-15 schreiben",
        f"{sheet}: Zeile 4, Spalte „Anmeldung am“: „gestern“ ist kein Datum (erwartet z. B. 15.03.2024, "
        "15.03.2024 09:12 oder 2024-03-15 09:12:33)",
        f"{archive}/subscribed_members_export_1.csv: Zeile 2, Spalte „OPTIN_TIME“: „2024-13-45 10:00:00“ gibt es "
        "nicht (Tag, Monat oder Uhrzeit außerhalb des Kalenders)"]


def test_a_file_full_of_one_mistake_shows_twenty_lines_and_the_count(store, runner, tmp_path) -> None:
    store.add("schon@example.org")
    sheet = tmp_path / "liste.csv"
    sheet.write_text("E-Mail;Status\n" + "".join(f"p{n}@example.org;vielleicht\n" for n in range(50)))
    lines = _refused(runner, store, sheet)
    assert len(lines) == 21 and lines[-1] == "… und 30 weitere Probleme; nichts wurde importiert"


def test_dry_run_of_a_zip_writes_nothing_and_reports_the_same(ws, store, runner, tmp_path) -> None:
    store.add("schon@example.org")
    before = store.path.read_bytes()
    archive = mailchimp_zip(tmp_path / "export.zip")
    dry = invoke(runner, "subscribers", "import", str(archive), "--dry-run", "--json")
    assert dry.exit_code == 0 and store.path.read_bytes() == before
    real = invoke(runner, "subscribers", "import", str(archive), "--json")
    assert json.loads(dry.stdout)["files"] == json.loads(real.stdout)["files"]
