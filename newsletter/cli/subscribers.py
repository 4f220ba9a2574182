"""Commands for the subscriber file: `newsletter subscribers …`."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from newsletter.cli.app import ErrorBoundary, app, confirm, current_workspace, out, print_json
from newsletter.erasure import erase_traces
from newsletter.importer import (
    DELIMITER_NAMES,
    ImportReport,
    export_file,
    import_csv,
    read_csv_file,
    write_csv,
    write_json,
)
from newsletter.signup import invite_pending, prune_pending
from newsletter.subscribers import (
    ACTIVE,
    BOUNCED,
    PENDING,
    STATUS_LABELS,
    UNSUBSCRIBED,
    Subscriber,
    SubscriberStore,
    subscriber_stats,
)

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
}


def _store() -> SubscriberStore:
    return SubscriberStore(current_workspace().subscribers_path)


def _when(value: dt.datetime | None) -> str:
    return value.astimezone().strftime("%d.%m.%Y %H:%M") if value else "–"


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
    file: Path = typer.Argument(..., help="Die CSV-Datei, z. B. aus Excel oder einem anderen Newsletter-Dienst.",
                                show_default=False),
    status: str = NEW_STATUS,
    source: str = typer.Option("", "--source", help="Woher die Adressen kommen (sonst „Import DATEI“)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Nur zeigen, was passieren würde; nichts speichern."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Importiert Adressen aus einer CSV-Datei (Komma, Semikolon oder Tab; UTF-8 oder Windows-1252).

    Die Spalten werden an der Kopfzeile erkannt (E-Mail, Name, Vorname, Nachname …); eine
    Datei nur mit Adressen geht auch. Wer sich abgemeldet hat, unzustellbar ist oder gelöscht
    wurde, wird nie wieder aufgenommen.

    Beispiel: [bold]newsletter subscribers import kontakte.csv --dry-run[/]
    """
    table = read_csv_file(file)
    report = import_csv(_store(), table, status, source or f"Import {file.name}", dry_run)
    if json_output:
        print_json(report.to_json())
    else:
        _print_report(report, status)


def _print_report(report: ImportReport, status: str) -> None:
    out.print(f"Gelesen: {report.filename} ({report.encoding}, {DELIMITER_NAMES[report.delimiter]}, "
              f"{report.rows} Zeilen)", soft_wrap=True, markup=False)
    counts = Table.grid(padding=(0, 2))
    counts.add_column()
    counts.add_column(justify="right")
    for label, rows in (("neu", report.added), ("aktualisiert", report.updated),
                        ("unverändert", report.unchanged), ("übersprungen", report.skipped)):
        counts.add_row(f"  {label}", str(len(rows)))
    out.print(counts)
    if report.updated:
        out.print("\n[bold]Aktualisiert[/]")
        for row in report.updated:
            out.print(Text(f"  Zeile {row.row}: {row.email}: {row.reason}"), soft_wrap=True)
    if report.skipped:
        out.print("\n[bold]Übersprungen[/]")
        for row in report.skipped:
            out.print(Text(f"  Zeile {row.row}: {row.email or '(leer)'}: {row.reason}"), soft_wrap=True)
    if report.dry_run:
        out.print("\n[yellow]Probelauf: nichts wurde gespeichert.[/]")
    elif report.added and status == PENDING:
        out.print("\nDie neuen Einträge sind unbestätigt (pending) und bekommen noch keine Ausgaben. "
                  "[bold]newsletter subscribers invite[/] schickt ihnen die Bestätigungsmail. Nur wenn alle "
                  "nachweislich eingewilligt haben: mit [bold]--status aktiv[/] importieren.", soft_wrap=True)


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
        subscribed = person.subscribed_at.astimezone().strftime("%d.%m.%Y") if person.subscribed_at else "–"
        table.add_row(Text(person.email), Text(person.name), STATUS_LABELS[person.status], subscribed)
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
        if key == "status":
            shown = f"{value} ({STATUS_LABELS[value]})"
        elif key.endswith("_at"):
            shown = _when(getattr(person, key))
        else:
            shown = value or "–"
        grid.add_row(label, Text(shown))
    out.print(grid)


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
    numbers = subscriber_stats(_store().load())
    if json_output:
        print_json({"total": numbers.total, "by_status": numbers.by_status,
                    "signups_by_month": numbers.signups_by_month, "erased": numbers.erased})
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column()
    grid.add_column(justify="right")
    grid.add_row("[bold]Einträge[/]", f"[bold]{numbers.total}[/]")
    for status, count in numbers.by_status.items():
        grid.add_row(f"  {STATUS_LABELS[status]}", str(count))
    if numbers.erased:
        grid.add_row("gelöscht (nur Prüfwert)", str(numbers.erased))
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
    yes: bool = typer.Option(False, "--yes", "-y", help="Nicht nachfragen (für Skripte)."),
) -> None:
    """Schickt unbestätigten Personen die Bestätigungsmail (Double-Opt-in).

    Für Menschen, die du mit `add` oder `import` eingetragen hast: Erst wenn sie den Link
    bestätigen, bekommen sie Ausgaben. Wer nach [web] confirm_days Tagen nicht bestätigt hat,
    wird von `prune` entfernt.

    Beispiel: [bold]newsletter subscribers invite anna@example.org[/]
    """
    workspace = current_workspace()
    people = SubscriberStore(workspace.subscribers_path).load()
    count = len(emails) if emails else sum(1 for p in people if p.status == PENDING)
    if count == 0:
        out.print("Niemand ist unbestätigt; keine Mail gesendet.")
        return
    if not confirm(f"Bestätigungsmail an {count} Person(en) senden?", yes):
        out.print("Nichts gesendet.")
        raise typer.Exit(1)
    sent = invite_pending(workspace, emails or None)
    for email in sent:
        out.print(Text(f"  Bestätigungsmail an {email}"), soft_wrap=True)
    out.print(f"{len(sent)} Bestätigungsmail(s) gesendet; der Link gilt "
              f"{workspace.config.web.confirm_days} Tage.", soft_wrap=True)


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
    expired = prune_pending(SubscriberStore(workspace.subscribers_path), dt.timedelta(days=days),
                            dry_run=dry_run)
    if json_output:
        print_json({"dry_run": dry_run, "confirm_days": days,
                    "removed": [person.email for person in expired]})
        return
    verb = "würden entfernt" if dry_run else "entfernt"
    out.print(f"{len(expired)} unbestätigte Anmeldung(en) älter als {days} Tage {verb}.")
    for person in expired:
        out.print(Text(f"  {person.email}"), soft_wrap=True)
