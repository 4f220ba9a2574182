"""Commands for the subscriber file: `newsletter subscribers …`."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table
from rich.text import Text

from newsletter.cli.app import ErrorBoundary, app, confirm, current_workspace, error_line, out, print_json
from newsletter.statuses import ACTIVE, BOUNCED, PENDING, STATUS_LABELS, UNSUBSCRIBED

if TYPE_CHECKING:  # the list, imports, proofs and mails load when a command needs them, not for --help
    from newsletter.importer import FileReport, ImportReport, RowResult
    from newsletter.proof import ConsentRecord
    from newsletter.subscribers import Moment, Subscriber, SubscriberStore

subscribers_app = typer.Typer(
    cls=ErrorBoundary, no_args_is_help=True, rich_markup_mode="rich",
    help="Abonnent:innen verwalten: hinzufügen, importieren, anzeigen, abmelden, löschen.",
)
app.add_typer(subscribers_app, name="subscribers")


def status_parser(allowed: tuple[str, ...]) -> Callable[[str], str]:
    """--status takes the words the tables show (aktiv, unbestätigt …) and the file's (active …)."""
    words = {word: status for status in allowed
             for word in (status, STATUS_LABELS[status], STATUS_LABELS[status].replace("ä", "ae"))}

    def parse(value: str) -> str:
        if (status := words.get(value.strip().casefold())) is None:
            raise typer.BadParameter(f"„{value}“; möglich: {', '.join(STATUS_LABELS[s] for s in allowed)}")
        return status

    return parse


NEW_STATUS = typer.Option(
    PENDING, "--status", parser=status_parser((PENDING, ACTIVE)), metavar="unbestätigt|aktiv", show_default=False,
    help="unbestätigt (Standard): bekommt erst nach Bestätigung Post. aktiv nur, wenn die "
         "Einwilligung nachweislich bestätigt ist.")
JSON_OPTION = typer.Option(False, "--json", help="Ausgabe als JSON für Skripte.")
EMAIL_ARG = typer.Argument(..., help="Die E-Mail-Adresse (Groß-/Kleinschreibung egal).", show_default=False)

# In the order `show` prints them: who, then how they came and consented.
FIELD_LABELS = {
    "email": "E-Mail", "name": "Name", "status": "Status", "id": "id", "source": "Quelle",
    "subscribed_at": "angemeldet", "confirmed_at": "bestätigt", "unsubscribed_at": "abgemeldet",
    "bounced_at": "unzustellbar seit", "invited_at": "Bestätigungsmail gesendet",
    "consent_version": "Einwilligung (Fassung)",
    "consent_text": "Einwilligungstext", "signup_ip": "IP bei Anmeldung",
    "signup_page": "Anmeldeseite", "confirm_ip": "IP bei Bestätigung", "note": "Notiz",
    "events": "Verlauf",
}


def _store() -> SubscriberStore:
    return current_workspace().store()


def _when(value: Moment | None) -> str:
    """A time in local time; a date an import gave without a time of day stays a date."""
    if value is None:
        return "–"
    return value.astimezone().strftime("%d.%m.%Y %H:%M") if isinstance(value, dt.datetime) else f"{value:%d.%m.%Y}"


def _day(value: Moment | None) -> str:
    if value is None:
        return "–"
    return (value.astimezone() if isinstance(value, dt.datetime) else value).strftime("%d.%m.%Y")


def _describe(person: Subscriber) -> str:
    return f"{person.email} ({STATUS_LABELS[person.status]})"


@subscribers_app.command()
def add(
    email: str = EMAIL_ARG,
    name: str = typer.Option("", "--name", "-n", help="Name, z. B. „Anna Müller“."),
    status: str = NEW_STATUS,
    source: str = typer.Option("", "--source", help="Woher die Anmeldung kommt, z. B. „Praxis, schriftlich“."),
    allow_erased: bool = typer.Option(
        False, "--allow-erased",
        help="Auch eine gelöschte Adresse wieder aufnehmen (nur auf ausdrücklichen Wunsch der Person)."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Fügt eine Person hinzu, standardmäßig unbestätigt.

    Mit --status aktiv bekommt sie sofort Ausgaben; das nur, wenn sie ihre Einwilligung
    nachweislich bestätigt hat (Double-Opt-in).

    Beispiel: [bold]newsletter subscribers add anna@example.org --name "Anna Müller"[/]
    """
    person = _store().add(email, name, status, source or "von Hand",
                          allow_erased=allow_erased)
    if json_output:
        print_json(person.to_json())
        return
    out.print(f"Hinzugefügt: {_describe(person)}", soft_wrap=True, markup=False)
    if person.status == PENDING:
        out.print(f"Diese Person bekommt Ausgaben erst, wenn sie ihre Anmeldung bestätigt hat. Die "
                  f"Bestätigungsmail schickt [bold]newsletter subscribers invite {person.email}[/].", soft_wrap=True)


@subscribers_app.command("import")
def import_(
    files: list[Path] = typer.Argument(
        ..., help="Eine oder mehrere CSV-Dateien oder der ZIP-Export eines Dienstes (z. B. Mailchimp).",
        show_default=False),
    status: str = NEW_STATUS,
    source: str = typer.Option("", "--source", help="Woher die Adressen kommen (sonst „Import DATEI“)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Nur zeigen, was passieren würde; nichts speichern."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Importiert Adressen aus CSV-Dateien oder dem Export eines anderen Newsletter-Dienstes.

    Erkennt die Exporte von Mailchimp (einzeln oder als ZIP), CleverReach, rapidmail, Brevo,
    listmonk, Keila und dieses Programms sowie Tabellen aus Excel (Komma, Semikolon oder Tab;
    UTF-8 oder Windows-1252). Anmelde- und Bestätigungszeit und IP bleiben, wie die Datei sie
    angibt; wer dort abgemeldet, unzustellbar oder gesperrt ist, wird nie aktiv. Eine Zelle, die
    sich nicht lesen lässt, stoppt den Import, bevor etwas gespeichert ist.

    Beispiel: [bold]newsletter subscribers import members_export.zip --dry-run[/]
    """
    from newsletter.importer import ImportProblems, import_tables, read_import_files

    try:
        tables = read_import_files(files)
    except ImportProblems as exc:
        for line in exc.lines():
            error_line(line)
        raise typer.Exit(1) from None
    report = import_tables(_store(), tables, status, source, dry_run)
    if json_output:
        print_json(report.to_json())
    else:
        _print_report(report, status)


OUTCOME_LABELS = (("added", "neu"), ("updated", "aktualisiert"), ("unchanged", "unverändert"),
                  ("skipped", "übersprungen"))


def _print_report(report: ImportReport, status: str) -> None:
    several = len(report.files) > 1
    for number, file in enumerate(report.files):
        if number:
            out.print()
        _print_file(file)
    for title, rows in (("Aktualisiert", report.updated), ("Übersprungen", report.skipped)):
        if rows:
            out.print(f"\n[bold]{title}[/]")
            for row in rows:
                out.print(Text(f"  {_where(row, several)}{row.email or '(leer)'}: {row.reason}"), soft_wrap=True)
    missing = report.without_proof
    if missing:
        out.print(f"\n[bold]Kein DOI-Nachweis[/] ({len(missing)}): Die Datei nennt nicht beides, Anmelde- und "
                  "Bestätigungszeit; die Einwilligung ist so nicht belegt.", soft_wrap=True)
        for row in missing:
            out.print(Text(f"  {_where(row, several)}{row.email} ({STATUS_LABELS[row.status]})"), soft_wrap=True)
        out.print("Eine neue Bestätigung holt [bold]newsletter subscribers invite --without-proof[/] ein.",
                  soft_wrap=True)
    if report.dry_run:
        out.print("\n[yellow]Probelauf: nichts wurde gespeichert.[/]")
    elif any(row.status == PENDING for row in report.added) and status == PENDING:
        out.print("\nDie neuen Einträge ohne Nachweis sind unbestätigt (pending) und bekommen noch keine Ausgaben. "
                  "[bold]newsletter subscribers invite[/] schickt ihnen die Bestätigungsmail. Nur wenn alle "
                  "nachweislich eingewilligt haben: mit [bold]--status aktiv[/] importieren.", soft_wrap=True)


def _print_file(file: FileReport) -> None:
    lines = f"{len(file.rows)} Zeile" + ("" if len(file.rows) == 1 else "n")
    from newsletter.importer import DELIMITER_NAMES

    out.print(Text(f"Gelesen: {file.filename} ({file.encoding}, {DELIMITER_NAMES[file.delimiter]}, {lines})"),
              soft_wrap=True)
    out.print(Text(f"  Format: {file.format}"), soft_wrap=True)
    counts = Table.grid(padding=(0, 2))
    counts.add_column()
    counts.add_column(justify="right")
    counts.add_column(style="dim")
    for key, label in OUTCOME_LABELS:
        detail = ""
        if key == "added" and file.of("added"):
            by_status = file.added_by_status()
            detail = ", ".join(f"{STATUS_LABELS[s]} {by_status[s]}" for s in (ACTIVE, PENDING, UNSUBSCRIBED, BOUNCED)
                               if by_status[s])
        counts.add_row(f"  {label}", str(file.counts()[key]), detail)
    out.print(counts)


def _where(row: RowResult, several: bool) -> str:
    return f"{Path(row.file).name}, Zeile {row.row}: " if several else f"Zeile {row.row}: "


@subscribers_app.command("list")
def list_(
    status: str | None = typer.Option(None, "--status", help="Nur Personen mit diesem Status.", show_default=False,
                                      parser=status_parser((ACTIVE, UNSUBSCRIBED, PENDING, BOUNCED)),
                                      metavar="aktiv|abgemeldet|unbestätigt|unzustellbar"),
    json_output: bool = JSON_OPTION,
) -> None:
    """Zeigt alle Abonnent:innen als Tabelle (oder mit --json als Liste für Skripte).

    Beispiel: [bold]newsletter subscribers list --status aktiv[/]
    """
    people = _store().load().with_status(status)
    if json_output:
        print_json([person.to_json() for person in people])
        return
    if not people:
        out.print("Niemand in der Liste" + (f" mit Status {STATUS_LABELS[status]}." if status else "."))
        return
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("E-Mail", overflow="fold")
    table.add_column("Name", overflow="fold")
    table.add_column("Status")
    table.add_column("angemeldet", no_wrap=True)
    for person in people:
        table.add_row(Text(person.email), Text(person.name), STATUS_LABELS[person.status], _day(person.subscribed_at))
    out.print(table)
    out.print(f"{len(people)} Einträge")


@subscribers_app.command()
def show(email: str = EMAIL_ARG, json_output: bool = JSON_OPTION) -> None:
    """Zeigt alles, was über eine Person gespeichert ist (Auskunft nach Art. 15 DSGVO).

    Beispiel: [bold]newsletter subscribers show anna@example.org --json[/]
    """
    person = _store().load().require(email)
    if json_output:
        print_json(person.to_json())
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column(overflow="fold")
    record = person.to_json()
    for key, label in FIELD_LABELS.items():
        value = record[key]
        if key == "events":
            continue
        if key == "status":
            shown = f"{value} ({STATUS_LABELS[value]})"
        elif key.endswith("_at"):
            shown = _when(getattr(person, key))
        else:
            shown = value or "–"
        grid.add_row(label, Text(shown))
    from newsletter.subscribers import PROOF_LABELS, proof_of_consent

    grid.add_row("Nachweis", Text(PROOF_LABELS[proof_of_consent(person)]))
    out.print(grid)
    from newsletter.proof import consent_record

    consent = consent_record(person)
    if consent.entries:
        out.print()
        out.print(Text.assemble((FIELD_LABELS["events"], "bold"),
                                f" (ausführlich: newsletter subscribers proof {person.email})"), soft_wrap=True)
        for entry in consent.entries:
            brief = ", ".join(value for label, value in entry.details if label in ("Ausgabe", "Statuscode", "Quelle"))
            out.print(Text(f"  {entry.when}  {entry.title}" + (f" ({brief})" if brief else "")), soft_wrap=True)


@subscribers_app.command()
def remove(email: str = EMAIL_ARG) -> None:
    """Meldet eine Person ab, etwa nach einer Antwort-Mail oder einem Anruf.

    Der Eintrag mit dem Nachweis der Einwilligung bleibt erhalten; sie bekommt nur keine
    Ausgaben mehr. Ganz löschen: [bold]newsletter subscribers forget[/].

    Beispiel: [bold]newsletter subscribers remove anna@example.org[/]
    """
    person, changed = _store().unsubscribe(email)
    if changed:
        out.print(f"Abgemeldet: {person.email}. Die Person bekommt keine Ausgaben mehr; der "
                  "Nachweis ihrer Einwilligung bleibt gespeichert.", soft_wrap=True, markup=False)
    else:
        out.print(f"{person.email} war schon abgemeldet.", soft_wrap=True, markup=False)


@subscribers_app.command()
def forget(
    email: str = EMAIL_ARG,
    yes: bool = typer.Option(False, "--yes", "-y", help="Ohne Rückfrage löschen."),
) -> None:
    """Löscht eine Person endgültig (Recht auf Löschung, Art. 17 DSGVO).

    Übrig bleibt nur ein Prüfwert (gesalzener Hash) der Adresse, damit kein späterer Import
    sie versehentlich wieder aufnimmt. Auch die Sicherungskopie wird ersetzt.

    Beispiel: [bold]newsletter subscribers forget anna@example.org --yes[/]
    """
    store = _store()
    person = store.load().require(email)
    if not confirm(f"{person.email} endgültig löschen? Das lässt sich nicht rückgängig machen.", yes):
        out.print("Nichts gelöscht.")
        raise typer.Exit(1)
    erased = store.forget(person.email)
    from newsletter.erasure import erase_traces

    rows, files = erase_traces(current_workspace().state_dir, erased.email)
    out.print(f"Gelöscht: {erased.email}, auch aus {rows} Versandprotokoll-Zeile(n) und {files} Datei(en) "
              "im Postausgang. Gespeichert bleibt nur ein Prüfwert, damit die Adresse nicht wieder "
              "importiert wird. Denk auch an Exporte, die du selbst gemacht hast.",
              soft_wrap=True, markup=False)


@subscribers_app.command()
def export(
    file: Path | None = typer.Argument(None, help="Zieldatei (sonst auf den Bildschirm).", show_default=False),
    json_output: bool = typer.Option(False, "--json", help="JSON statt CSV."),
    excel: bool = typer.Option(False, "--excel", help="CSV so, wie ein deutsches Excel es direkt öffnet."),
    force: bool = typer.Option(False, "--force", help="Eine vorhandene Datei überschreiben."),
) -> None:
    """Exportiert alle Abonnent:innen mit allen Feldern als CSV (oder JSON).

    Für eine Sicherung oder den Umzug zu einem anderen Dienst. Die Datei enthält
    personenbezogene Daten und ist nur für dich lesbar.

    Beispiel: [bold]newsletter subscribers export sicherung.csv[/]
    """
    from newsletter.importer import export_file, write_csv, write_json

    people = _store().load()
    if file is None:
        if json_output:
            write_json(people, sys.stdout)
        else:
            write_csv(people, sys.stdout, excel)
        return
    export_file(people, file, as_json=json_output, excel=excel, overwrite=force)
    out.print(f"{len(people)} Einträge nach {file} exportiert.", soft_wrap=True, markup=False)


@subscribers_app.command()
def stats(json_output: bool = JSON_OPTION) -> None:
    """Zählt Abonnent:innen nach Status und Anmeldungen pro Monat.

    Beispiel: [bold]newsletter subscribers stats[/]
    """
    from newsletter.subscribers import subscriber_stats

    numbers = subscriber_stats(_store().load())
    if json_output:
        print_json({"total": numbers.total, "by_status": numbers.by_status,
                    "signups_by_month": numbers.signups_by_month, "erased": numbers.erased,
                    "undated": numbers.undated, "without_proof": numbers.without_proof})
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column()
    grid.add_column(justify="right")
    grid.add_row("[bold]Einträge[/]", f"[bold]{numbers.total}[/]")
    for status, count in numbers.by_status.items():
        grid.add_row(f"  {STATUS_LABELS[status]}", str(count))
    if numbers.erased:
        grid.add_row("gelöscht (nur Prüfwert)", str(numbers.erased))
    if numbers.without_proof:
        grid.add_row("kein DOI-Nachweis", str(numbers.without_proof))
    if numbers.undated:
        grid.add_row("ohne Anmeldedatum", str(numbers.undated))
    out.print(grid)
    if numbers.signups_by_month:
        months = Table("Monat", "Anmeldungen", show_edge=False, pad_edge=False)
        for month, count in numbers.signups_by_month.items():
            months.add_row(month, str(count))
        out.print()
        out.print(months)


@subscribers_app.command()
def invite(
    emails: list[str] = typer.Argument(None, help="Diese Adressen (sonst alle unbestätigten).", show_default=False),
    without_proof: bool = typer.Option(
        False, "--without-proof",
        help="Alle mit „kein DOI-Nachweis“ (importiert ohne Anmelde- und Bestätigungszeit), auch aktive."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Nicht nachfragen (für Skripte)."),
) -> None:
    """Schickt unbestätigten Personen die Bestätigungsmail (Double-Opt-in).

    Für Menschen, die du mit `add` oder `import` eingetragen hast: Erst wenn sie den Link
    bestätigen, bekommen sie Ausgaben. Wer nach \\[web] confirm_days Tagen nicht bestätigt hat,
    wird von `prune` entfernt. Mit --without-proof bekommen genau die Personen ohne
    DOI-Nachweis eine neue Bestätigungsmail; ihr Klick wird als Nachweis gespeichert.

    Beispiel: [bold]newsletter subscribers invite --without-proof[/]
    """
    from newsletter.subscribers import needs_fresh_confirmation

    workspace = current_workspace()
    people = workspace.store().load()
    if emails:
        count = len(emails)
    elif without_proof:
        count = sum(1 for p in people if needs_fresh_confirmation(p))
    else:
        count = sum(1 for p in people if p.status == PENDING)
    if count == 0:
        out.print("Niemand ohne DOI-Nachweis; keine Mail gesendet." if without_proof
                  else "Niemand ist unbestätigt; keine Mail gesendet.")
        return
    whom = "Person(en) ohne DOI-Nachweis" if without_proof and not emails else "Person(en)"
    if not confirm(f"Bestätigungsmail an {count} {whom} senden?", yes):
        out.print("Nichts gesendet.")
        raise typer.Exit(1)
    from newsletter.signup import invite_pending

    sent = invite_pending(workspace, emails or None, without_proof=without_proof)
    for email in sent:
        out.print(Text(f"  Bestätigungsmail an {email}"), soft_wrap=True)
    out.print(f"{len(sent)} Bestätigungsmail(s) gesendet; der Link gilt "
              f"{workspace.config.web.confirm_days} Tage.", soft_wrap=True)


@subscribers_app.command()
def proof(
    email: str = EMAIL_ARG,
    json_output: bool = typer.Option(False, "--json", help="Als JSON (für Skripte oder zum Aufbewahren)."),
    out_file: Path | None = typer.Option(
        None, "--out", help="In eine Datei: eine druckbare HTML-Seite (oder JSON, wenn sie auf .json endet).",
        show_default=False),
    force: bool = typer.Option(False, "--force", help="Eine vorhandene Datei überschreiben."),
) -> None:
    """Nachweis der Einwilligung einer Person: Anmeldung, Bestätigung, Abmeldung, mit Zeit und IP.

    Zeigt jedes gespeicherte Ereignis mit dem genauen Einwilligungstext und seiner Fassung, die
    Bestätigungsmails mit ihrer Message-ID und was eine Importdatei über früher angibt. Mit
    --out entsteht eine Seite, die du ausdrucken oder einer Aufsichtsbehörde schicken kannst.

    Beispiel: [bold]newsletter subscribers proof anna@example.org --out nachweis-anna.html[/]
    """
    workspace = current_workspace()
    from newsletter.importer import private_file
    from newsletter.proof import consent_record, render_html

    record = consent_record(workspace.store().load().require(email))
    if out_file is not None:
        as_json = out_file.suffix.lower() == ".json"
        with private_file(out_file, overwrite=force) as stream:
            if as_json:
                json.dump(record.to_json(), stream, ensure_ascii=False, indent=2)
                stream.write("\n")
            else:
                stream.write(render_html(record, workspace))
        if not json_output:
            out.print(Text(f"Nachweis für {record.email} nach {out_file} geschrieben "
                           f"({'JSON' if as_json else 'HTML, zum Drucken'}); die Datei enthält "
                           "personenbezogene Daten und ist nur für dich lesbar."), soft_wrap=True)
            return
    if json_output:
        print_json(record.to_json())
        return
    _print_proof(record)


def _print_proof(record: ConsentRecord) -> None:
    from newsletter.proof import BASIS_LABELS, RECORDED

    out.print(Text(f"Nachweis der Einwilligung: {record.email}", style="bold"), soft_wrap=True)
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim")
    facts.add_column(overflow="fold")
    for label, value in (("Name", record.name), ("Status", record.status_label), ("Nachweis", record.proof_label),
                         ("Kennung", record.id)):
        if value:
            facts.add_row(label, Text(value))
    out.print(facts)
    out.print(Text(record.summary, style="green" if record.proof == "doi" else "yellow"), soft_wrap=True)
    if not record.entries:
        out.print("\nZu dieser Person ist kein Ereignis gespeichert.")
        return
    # One event per paragraph, never cut into columns: a Message-ID or a consent text stays whole.
    for entry in record.entries:
        line = Text.assemble((entry.when, "bold"), "  ", (entry.title, "bold"))
        if entry.basis != RECORDED:
            line.append(f" ({BASIS_LABELS[entry.basis]})", style="dim")
        out.print()
        out.print(line, soft_wrap=True)
        for label, value in entry.details:
            out.print(Text.assemble("    ", (f"{label}: ", "dim"),
                                    f"„{value}“" if label == "Einwilligungstext" else value), soft_wrap=True)


@subscribers_app.command()
def prune(
    dry_run: bool = typer.Option(False, "--dry-run", help="Nur zeigen, wer entfernt würde."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Entfernt Anmeldungen, die nach [web] confirm_days Tagen noch unbestätigt sind.

    Wer nicht bestätigt hat, hat nicht eingewilligt; seine Daten werden nicht aufbewahrt.
    Gedacht für einen täglichen cron-Job neben newsletter serve.

    Beispiel: [bold]newsletter subscribers prune --dry-run[/]
    """
    workspace = current_workspace()
    days = workspace.config.web.confirm_days
    from newsletter.signup import prune_pending

    expired = prune_pending(workspace.store(), dt.timedelta(days=days),
                            dry_run=dry_run)
    if json_output:
        print_json({"dry_run": dry_run, "confirm_days": days,
                    "removed": [person.email for person in expired]})
        return
    verb = "würden entfernt" if dry_run else "entfernt"
    out.print(f"{len(expired)} unbestätigte Anmeldung(en) älter als {days} Tage {verb}.")
    for person in expired:
        out.print(Text(f"  {person.email}"), soft_wrap=True)
