"""`subscribers proof`: the consent record of one person, and the confirmations that make it.

For a web sign-up (over real HTTP), an import with evidence and one without; as rich text, JSON
and a printable HTML page; plus `invite --without-proof` and the consent version stored at every
confirmation.
"""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from conftest import invoke
from test_history import OLD_FILE
from test_import_services import SUBSCRIBED, ZIP_ID
from web_server import WebServer

from newsletter.subscribers import ACTIVE, CONFIRMED, INVITED, PENDING, SubscriberStore, proof_of_consent
from newsletter.workspace import Workspace

BASE = "https://newsletter.praxis.example.org"
CONSENT = "Ja, ich möchte den Newsletter erhalten."


@pytest.fixture
def web(ws: Workspace) -> Iterator[WebServer]:
    server = WebServer(ws).start()
    yield server
    server.stop()


@pytest.fixture
def store(ws: Workspace) -> SubscriberStore:
    return SubscriberStore(ws.subscribers_path)


def confirmation(ws: Workspace, email: str) -> tuple[str, str]:
    """The confirmation link in the mail sent to `email`, and that mail's Message-ID."""
    mail = message_from_bytes((ws.outbox_dir / "web" / "confirm" / f"{email}.eml").read_bytes(), policy=policy.default)
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    [link] = re.findall(rf"{re.escape(BASE)}/c/\S+", text)
    return link, str(mail["Message-ID"])


def proof_json(runner, email: str) -> dict:
    result = invoke(runner, "subscribers", "proof", email, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_proof_of_a_web_signup(ws: Workspace, store: SubscriberStore, web: WebServer, runner,
                               tmp_path: Path) -> None:
    form = "email=nora%40example.org&name=Nora+%3Cscript%3Ealert(1)%3C%2Fscript%3E+%26+Co&consent=yes&website="
    web.post_form("/subscribe", form, {"Referer": "https://praxis.example.org/newsletter?quelle=mail"})
    link, message_id = confirmation(ws, "nora@example.org")
    assert "<button" in web.get(link).text
    web.post_form(link, "")

    shown = invoke(runner, "subscribers", "proof", "Nora@Example.org")
    assert shown.exit_code == 0, shown.output
    for expected in ("Nachweis der Einwilligung: nora@example.org", "Double-Opt-in belegt: bestätigt am",
                     "Anmeldung über das Formular", "Anmeldeseite: https://praxis.example.org",
                     "IP-Adresse: 127.0.0.1", f"Einwilligungstext: „{CONSENT}“", "Fassung des Einwilligungstexts: 1",
                     "Bestätigungsmail gesendet", f"Message-ID: {message_id}", "Anmeldung bestätigt (Double-Opt-in)",
                     "Uhr ME"):
        assert expected in shown.stdout, expected

    record = proof_json(runner, "nora@example.org")
    assert (record["proof"], record["status"]) == ("doi", ACTIVE)
    assert [e["kind"] for e in record["entries"]] == ["signup", "invited", "confirmed"]
    signup, invited, confirmed = record["entries"]
    assert signup["details"] == {"Anmeldeseite": "https://praxis.example.org", "IP-Adresse": "127.0.0.1",
                                 "Fassung des Einwilligungstexts": "1", "Einwilligungstext": CONSENT}
    assert invited["details"] == {"Message-ID": message_id}
    assert confirmed["details"]["Fassung des Einwilligungstexts"] == "1"
    assert record["events"][2]["consent_text"] == CONSENT and record["events"][2]["ip"] == "127.0.0.1"

    page = tmp_path / "nachweis.html"
    result = invoke(runner, "subscribers", "proof", "nora@example.org", "--out", str(page))
    assert result.exit_code == 0 and "nur für dich lesbar" in result.stdout
    assert stat.S_IMODE(page.stat().st_mode) == 0o600
    html = page.read_text(encoding="utf-8")
    assert "Nora &lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in html and "<script" not in html
    assert message_id.replace("<", "&lt;").replace(">", "&gt;") in html
    for outside in ("src=", "href=", "<link", "@import", "url(", "<img", "<iframe"):  # nothing loaded from elsewhere
        assert outside not in html, outside
    assert "@media print" in html and "Praxis Mira Sommerfeld" in html and "Lindenallee 12" in html
    again = invoke(runner, "subscribers", "proof", "nora@example.org", "--out", str(page))
    assert again.exit_code == 1 and "--force" in again.stderr
    assert invoke(runner, "subscribers", "proof", "nora@example.org", "--out", str(page), "--force").exit_code == 0
    as_json = tmp_path / "nachweis.json"
    assert invoke(runner, "subscribers", "proof", "nora@example.org", "--out", str(as_json)).exit_code == 0
    assert json.loads(as_json.read_text())["entries"] == record["entries"]


def test_proof_of_an_import_with_evidence(ws: Workspace, runner, tmp_path: Path) -> None:
    path = tmp_path / f"subscribed_members_export_{ZIP_ID}.csv"
    path.write_bytes(SUBSCRIBED)
    assert invoke(runner, "subscribers", "import", str(path)).exit_code == 0
    record = proof_json(runner, "anna@example.org")
    assert record["proof"] == "doi"
    assert record["summary"] == (f"Double-Opt-in belegt laut Mailchimp (subscribed_members_export_{ZIP_ID}.csv): "
                                 "angemeldet am 15.03.2024, 10:12:33 Uhr MEZ, bestätigt am 15.03.2024, "
                                 "10:14:02 Uhr MEZ.")
    signup, confirmed, imported = record["entries"]
    assert (signup["at"], signup["basis"], signup["details"]["IP-Adresse"]) == (
        "2024-03-15T09:12:33+00:00", "stated", "192.0.2.10")
    assert (confirmed["at"], confirmed["details"]["IP-Adresse"]) == ("2024-03-15T09:14:02+00:00", "192.0.2.11")
    assert signup["details"]["Quelle"].startswith(f"Mailchimp, subscribed_members_export_{ZIP_ID}.csv, Zeile 2, "
                                                  "importiert am ")
    assert (imported["kind"], imported["basis"]) == ("imported", "recorded")
    assert imported["details"]["Status laut Datei"] == "subscribed_members_export"
    shown = invoke(runner, "subscribers", "proof", "anna@example.org").stdout
    assert "15.03.2024, 10:12:33 Uhr MEZ" in shown and "Anmeldung (laut Importdatei)" in shown


def test_proof_of_an_import_without_evidence(ws: Workspace, runner, tmp_path: Path) -> None:
    path = tmp_path / "kontakte.csv"
    path.write_text("E-Mail;Name\npapier@example.org;Paula Papier\n", encoding="utf-8")
    assert invoke(runner, "subscribers", "import", str(path), "--status", "active").exit_code == 0
    record = proof_json(runner, "papier@example.org")
    assert (record["proof"], record["proof_label"]) == ("missing", "kein DOI-Nachweis")
    assert record["summary"].startswith("Kein Nachweis eines Double-Opt-in")
    [imported] = record["entries"]
    assert imported["details"]["Nicht in der Datei"] == "Anmeldezeitpunkt und Bestätigungszeitpunkt"
    assert imported["details"]["Datei"] == "kontakte.csv"
    shown = invoke(runner, "subscribers", "proof", "papier@example.org").stdout
    assert "kein DOI-Nachweis" in shown and "invite --without-proof" in shown
    page = tmp_path / "p.html"
    assert invoke(runner, "subscribers", "proof", "papier@example.org", "--out", str(page)).exit_code == 0
    assert 'class="summary missing"' in page.read_text(encoding="utf-8")


def test_proof_of_a_record_older_than_the_history_is_marked_so(ws: Workspace, store: SubscriberStore, runner) -> None:
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_text(OLD_FILE, encoding="utf-8")
    record = proof_json(runner, "anna.beispiel@example.org")
    assert record["proof"] == "doi" and record["events"] == []
    assert [(e["title"], e["basis"]) for e in record["entries"]] == [("Anmeldung", "fields"), ("Bestätigung", "fields")]
    assert record["entries"][0]["details"]["IP-Adresse"] == "192.0.2.10"
    missing = invoke(runner, "subscribers", "proof", "niemand@example.org")
    assert missing.exit_code == 1 and missing.stderr == "Fehler: niemand@example.org: nicht in der Liste\n"


def test_invite_without_proof_asks_exactly_those_and_their_click_is_the_proof(
        ws: Workspace, store: SubscriberStore, web: WebServer, runner, tmp_path: Path) -> None:
    mailchimp = tmp_path / f"subscribed_members_export_{ZIP_ID}.csv"
    mailchimp.write_bytes(SUBSCRIBED)
    assert invoke(runner, "subscribers", "import", str(mailchimp), "--status", "active").exit_code == 0
    sheet = tmp_path / "kontakte.csv"
    sheet.write_text("E-Mail\npapier@example.org\n", encoding="utf-8")
    assert invoke(runner, "subscribers", "import", str(sheet)).exit_code == 0
    assert invoke(runner, "subscribers", "add", "hand@example.org", "--status", "active").exit_code == 0
    assert json.loads(invoke(runner, "subscribers", "stats", "--json").stdout)["without_proof"] == 2

    refused = invoke(runner, "subscribers", "invite", "--without-proof")
    assert refused.exit_code == 1 and "Bestätigungsmail an 2 Person(en) ohne DOI-Nachweis senden?" in refused.stderr
    result = invoke(runner, "subscribers", "invite", "--without-proof", "--yes")
    assert result.exit_code == 0, result.output
    outbox = ws.outbox_dir / "web" / "confirm"
    assert sorted(p.name for p in outbox.iterdir()) == ["admin@example.org.eml", "papier@example.org.eml"]
    link, message_id = confirmation(ws, "admin@example.org")
    admin = store.load().get("admin@example.org")
    assert admin.status == ACTIVE and admin.events[-1].kind == INVITED and admin.events[-1].message_id == message_id

    assert "<button" in web.get(link).text  # active, but not proven: the page asks
    web.post_form(link, "")
    admin = store.load().get("admin@example.org")
    assert proof_of_consent(admin) == "doi" and admin.confirm_ip == "127.0.0.1"
    assert (admin.consent_text, admin.consent_version) == (CONSENT, "1")
    assert (admin.events[-1].kind, admin.events[-1].consent_version, admin.events[-1].consent_text) == (
        CONFIRMED, "1", CONSENT)
    assert not (ws.outbox_dir / "web" / "welcome").exists()  # she was getting issues already
    assert "Schön, dass du dabei bist" in web.get(link).text  # confirmed: no button any more

    link, _ = confirmation(ws, "papier@example.org")
    web.post_form(link, "")
    assert store.load().get("papier@example.org").status == ACTIVE
    assert (ws.outbox_dir / "web" / "welcome" / "papier@example.org.eml").exists()
    none_left = invoke(runner, "subscribers", "invite", "--without-proof", "--yes")
    assert none_left.exit_code == 0 and "Niemand ohne DOI-Nachweis" in none_left.stdout
    refused = invoke(runner, "subscribers", "invite", "hand@example.org", "--yes")
    assert refused.exit_code == 1 and "ist nicht unbestätigt" in refused.stderr


def test_a_confirmation_through_invite_stores_the_consent_text_and_version(
        ws: Workspace, store: SubscriberStore, web: WebServer, runner) -> None:
    config = ws.root / "newsletter.toml"
    config.write_text(config.read_text().replace('consent_text = "Ja, ich möchte den Newsletter erhalten."',
                                                 'consent_text = "Ja, ich möchte den Newsletter erhalten."\n'
                                                 'consent_version = "2026-11"'), encoding="utf-8")
    ws.__dict__.pop("config", None)
    web.stop()
    web = WebServer(ws).start()
    try:
        assert invoke(runner, "subscribers", "add", "zettel@example.org", "--source", "Anmeldezettel").exit_code == 0
        assert invoke(runner, "subscribers", "invite", "--yes").exit_code == 0
        link, _ = confirmation(ws, "zettel@example.org")
        web.post_form(link, "")
    finally:
        web.stop()
    person = store.load().get("zettel@example.org")
    assert (person.status, person.consent_text, person.consent_version) == (ACTIVE, CONSENT, "2026-11")
    assert [e.kind for e in person.events] == ["added", INVITED, CONFIRMED]
    assert person.events[-1].consent_version == "2026-11"
    record = proof_json(runner, "zettel@example.org")
    assert record["entries"][0]["details"] == {"Status danach": "unbestätigt", "Quelle": "Anmeldezettel"}
    assert record["summary"].startswith("Double-Opt-in belegt: bestätigt am")
    assert PENDING not in {e["status"] for e in record["events"][1:] if "status" in e}
