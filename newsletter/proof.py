"""The consent record of one person (`subscribers proof`): every event, in German, printable.

What a supervisory authority or the person may ask for: when and how they signed up, which
consent text (and version) they agreed to, when and from where they confirmed, which mails
asked them, when they left. Built from the append-only history; what an imported file states
about the past is shown at its time and marked as stated by that file; a record from before
the history existed is shown from its fields and marked so. Nothing is guessed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from newsletter import __version__
from newsletter.subscribers import (
    ADDED,
    BERLIN,
    BOUNCE,
    BOUNCED,
    BOUNCED_EVENT,
    CONFIRMED,
    DECLARED,
    DOI_PROVEN,
    IMPORTED,
    INVITED,
    NO_PROOF,
    PROOF_LABELS,
    SIGNUP,
    STATUS_LABELS,
    UNCONFIRMED,
    UNSUBSCRIBED,
    UNSUBSCRIBED_EVENT,
    Event,
    Moment,
    Subscriber,
    earliest,
    needs_fresh_confirmation,
    now,
    proof_of_consent,
)
from newsletter.workspace import Workspace

RECORDED, STATED, FIELDS = "recorded", "stated", "fields"
BASIS_LABELS = {RECORDED: "aufgezeichnet", STATED: "laut Importdatei", FIELDS: "laut Eintrag (vor dem Verlauf)"}
ZONE_NAMES = {"CET": "MEZ", "CEST": "MESZ"}
TITLES = {
    SIGNUP: "Anmeldung über das Formular",
    INVITED: "Bestätigungsmail gesendet",
    CONFIRMED: "Anmeldung bestätigt (Double-Opt-in)",
    ADDED: "Von Hand eingetragen",
    UNSUBSCRIBED_EVENT: "Abgemeldet",
    BOUNCED_EVENT: "Als unzustellbar markiert",
    BOUNCE: "Zustellung gescheitert (Bounce, Status unverändert)",
    "pending": "Auf unbestätigt gesetzt",
}
DETAIL_LABELS = {
    "status": "Status danach", "source": "Quelle", "ip": "IP-Adresse", "page": "Anmeldeseite",
    "consent_version": "Fassung des Einwilligungstexts", "consent_text": "Einwilligungstext",
    "message_id": "Message-ID", "file": "Datei", "format": "Format", "line": "Zeile",
    "file_status": "Status laut Datei", "signup_ip": "IP bei Anmeldung laut Datei",
    "confirm_ip": "IP bei Bestätigung laut Datei", "reason": "Grund laut Datei", "issue": "Ausgabe",
    "code": "Statuscode", "diagnostic": "Antwort des Servers", "note": "Notiz",
}


def when(value: Moment | None) -> str:
    """A time as a German reader (and an authority) reads it: local time with its zone named."""
    if value is None:
        return "nicht angegeben"
    if not isinstance(value, dt.datetime):
        return f"{value:%d.%m.%Y} (ohne Uhrzeit)"
    local = earliest(value).astimezone(BERLIN)
    zone = local.tzname() or ""
    return f"{local:%d.%m.%Y, %H:%M:%S} Uhr {ZONE_NAMES.get(zone, zone)}"


@dataclass(frozen=True)
class ProofEntry:
    """One line of the record: when, what, its details, and on what basis it is known."""

    at: Moment | None
    kind: str
    title: str
    basis: str = RECORDED
    details: list[tuple[str, str]] = field(default_factory=list)

    @property
    def when(self) -> str:
        return when(self.at)

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat() if self.at else None, "at_local": self.when, "kind": self.kind,
                "title": self.title, "basis": self.basis, "details": dict(self.details)}


@dataclass(frozen=True)
class ConsentRecord:
    """Everything `subscribers proof` shows, as data; rich, JSON and HTML render the same."""

    email: str
    name: str
    id: str
    status: str
    proof: str
    summary: str
    entries: list[ProofEntry]
    events: list[dict[str, Any]]  # the history exactly as stored
    generated_at: dt.datetime
    version: str = __version__

    @property
    def status_label(self) -> str:
        return STATUS_LABELS[self.status]

    @property
    def proof_label(self) -> str:
        return PROOF_LABELS[self.proof]

    def to_json(self) -> dict[str, Any]:
        return {"email": self.email, "name": self.name, "id": self.id, "status": self.status,
                "proof": self.proof, "proof_label": self.proof_label, "summary": self.summary,
                "entries": [entry.to_json() for entry in self.entries], "events": self.events,
                "generated_at": self.generated_at.isoformat(), "generated_by": f"newsletter {self.version}"}


def consent_record(person: Subscriber, at: dt.datetime | None = None) -> ConsentRecord:
    entries = [entry for event in person.events for entry in _entries(event)]
    if not any(event.kind in (SIGNUP, ADDED, IMPORTED) for event in person.events):
        entries = _from_fields(person) + entries
    # In order of time; what a file states about the past comes before its import. A date alone
    # counts from its first second, so it stands before anything else on that day.
    entries.sort(key=lambda entry: earliest(entry.at) if entry.at else earliest(dt.datetime.max))
    proof = proof_of_consent(person)
    return ConsentRecord(email=person.email, name=person.name, id=person.id, status=person.status, proof=proof,
                         summary=_summary(person, proof), entries=entries,
                         events=[event.to_json() for event in person.events], generated_at=at or now())


def _details(event: Event, *names: str) -> list[tuple[str, str]]:
    values = []
    for name in names:
        value = getattr(event, name)
        if value:
            shown = STATUS_LABELS.get(value, value) if name == "status" else str(value)
            values.append((DETAIL_LABELS[name], shown))
    return values


def _entries(event: Event) -> list[ProofEntry]:
    kind = event.kind
    if kind == SIGNUP:
        return [ProofEntry(event.at, kind, TITLES[kind],
                           details=_details(event, "page", "ip", "consent_version", "consent_text"))]
    if kind == INVITED:
        return [ProofEntry(event.at, kind, TITLES[kind], details=_details(event, "message_id"))]
    if kind == CONFIRMED:
        return [ProofEntry(event.at, kind, TITLES[kind], details=_details(event, "ip", "consent_version",
                                                                          "consent_text"))]
    if kind == ADDED:
        return [ProofEntry(event.at, kind, TITLES[kind], details=_details(event, "status", "source"))]
    if kind == IMPORTED:
        return _imported(event)
    if kind in TITLES:
        return [ProofEntry(event.at, kind, TITLES[kind],
                           details=_details(event, "source", "issue", "code", "diagnostic", "note"))]
    shown = [name for name in event.to_toml() if name not in ("kind", "at") and name in DETAIL_LABELS]
    return [ProofEntry(event.at, kind, kind, details=_details(event, *shown))]


def _imported(event: Event) -> list[ProofEntry]:
    """An import, plus what its file states about the past, each at its own time and marked so."""
    origin = f"{event.format or 'Import'}, {event.file}" + (f", Zeile {event.line}" if event.line else "")
    source = ("Quelle", f"{origin}, importiert am {when(event.at)}")
    stated = []
    for at, kind, title, ip in ((event.signup_at, SIGNUP, "Anmeldung", event.signup_ip),
                                (event.confirmed_at, CONFIRMED, "Bestätigung", event.confirm_ip)):
        if at is not None:
            stated.append(ProofEntry(at, kind, title, STATED, [("IP-Adresse", ip)] * bool(ip) + [source]))
    for at, kind, title in ((event.unsubscribed_at, UNSUBSCRIBED_EVENT, "Abmeldung"),
                            (event.bounced_at, BOUNCED_EVENT, "Als unzustellbar entfernt")):
        if at is not None:
            reason = [("Grund", event.reason)] * bool(event.reason)
            stated.append(ProofEntry(at, kind, title, STATED, [*reason, source]))
    details = _details(event, "file", "line", "file_status", "status", "source", "consent_version", "consent_text")
    missing = [label for value, label in ((event.signup_at, "Anmeldezeitpunkt"),
                                          (event.confirmed_at, "Bestätigungszeitpunkt")) if value is None]
    if missing:
        details.append(("Nicht in der Datei", " und ".join(missing)))
    if event.reason and event.unsubscribed_at is None and event.bounced_at is None:
        details.append(("Grund laut Datei", event.reason))
    return [*stated, ProofEntry(event.at, IMPORTED, f"Import aus {event.format or 'einer Datei'}", details=details)]


def _from_fields(person: Subscriber) -> list[ProofEntry]:
    """A record older than the history: what its fields say, marked as such."""
    entries = []
    origin = [("Quelle", person.source)] * bool(person.source)
    if person.subscribed_at:
        details = origin + [(label, value) for label, value in (
            ("Anmeldeseite", person.signup_page), ("IP-Adresse", person.signup_ip),
            ("Fassung des Einwilligungstexts", person.consent_version), ("Einwilligungstext", person.consent_text))
            if value]
        entries.append(ProofEntry(person.subscribed_at, "subscribed", "Anmeldung", FIELDS, details))
    if person.confirmed_at:
        entries.append(ProofEntry(person.confirmed_at, CONFIRMED, "Bestätigung", FIELDS,
                                  [("IP-Adresse", person.confirm_ip)] * bool(person.confirm_ip)))
    if person.unsubscribed_at and not any(e.kind == UNSUBSCRIBED_EVENT for e in person.events):
        entries.append(ProofEntry(person.unsubscribed_at, UNSUBSCRIBED_EVENT, "Abgemeldet", FIELDS))
    if person.bounced_at and not any(e.kind == BOUNCED_EVENT for e in person.events):
        entries.append(ProofEntry(person.bounced_at, BOUNCED_EVENT, "Als unzustellbar markiert", FIELDS))
    return entries


def _summary(person: Subscriber, proof: str) -> str:
    consent = _consent(person, proof)
    if person.status == UNSUBSCRIBED and person.unsubscribed_at:
        return f"{consent} Abgemeldet am {when(person.unsubscribed_at)}."
    if person.status == BOUNCED and person.bounced_at:
        return f"{consent} Als unzustellbar markiert am {when(person.bounced_at)}."
    return consent


def _consent(person: Subscriber, proof: str) -> str:
    if proof == DOI_PROVEN:
        confirmations = [e for e in person.events if e.kind == CONFIRMED]
        if confirmations:
            last = confirmations[-1]
            return (f"Double-Opt-in belegt: bestätigt am {when(last.at)}"
                    + (f" von {last.ip}" if last.ip else "") + ".")
        imported = next((e for e in person.events if e.has_doi_evidence), None)
        if imported is not None:
            return (f"Double-Opt-in belegt laut {imported.format or 'Import'} ({imported.file}): angemeldet am "
                    f"{when(imported.signup_at)}, bestätigt am {when(imported.confirmed_at)}.")
        return f"Double-Opt-in belegt: angemeldet am {when(person.subscribed_at)}, " \
               f"bestätigt am {when(person.confirmed_at)}."
    if proof == NO_PROOF:
        missing = "Kein Nachweis eines Double-Opt-in: Die Importdatei nennt nicht beides, Anmelde- und " \
                  "Bestätigungszeitpunkt."
        if needs_fresh_confirmation(person):
            return f"{missing} Eine neue Bestätigung holt „newsletter subscribers invite --without-proof“ ein."
        return missing
    if proof == DECLARED:
        return ("Von Hand eingetragen; die Einwilligung ist außerhalb dieses Programms belegt"
                + (f" (Quelle: {person.source})." if person.source else "."))
    assert proof == UNCONFIRMED
    return "Angemeldet, aber nicht bestätigt: keine Einwilligung in den Newsletter."


def render_html(record: ConsentRecord, workspace: Workspace) -> str:
    """The record as one self-contained, printable page (templates/proof.html, everything escaped)."""
    config = workspace.config
    return workspace.templates.get_template("proof.html").render(
        record=record, newsletter=config.newsletter, imprint=config.imprint, basis_labels=BASIS_LABELS,
        generated=when(record.generated_at))
