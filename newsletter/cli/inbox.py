"""The inbox command: what came back to her mailbox after a send."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.table import Table
from rich.text import Text

from newsletter.cli.app import app, current_workspace, out, print_json

if TYPE_CHECKING:
    from newsletter.inbox import InboxReport



@app.command()
def inbox(
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Nur zeigen, was geschähe; nichts ändern, nichts verschieben."),
    json_output: bool = typer.Option(False, "--json", help="Ergebnis als JSON."),
) -> None:
    """Liest dein Postfach (\\[imap]): Unzustellbares, Beschwerden, Abmeldungen per Mail und Antworten.

    Wer nicht mehr erreichbar ist oder sich per Mail abgemeldet hat, bekommt keine Ausgabe mehr.
    Bearbeitete Mails kommen in Unterordner (Newsletter/Unzustellbar, …); gelöscht wird nie etwas.
    Antworten deiner Leser:innen bleiben, wo sie sind. `send` ruft das vorher selbst auf.

    Beispiel: [bold]newsletter inbox --dry-run[/]
    """
    from newsletter.inbox import read_inbox  # IMAPClient and the mail parsers: only for this command

    report = read_inbox(current_workspace(), dry_run=dry_run)
    if json_output:
        print_json(report.to_json())
        return
    print_report(report)


def print_report(report: InboxReport) -> None:
    from newsletter.inbox import OUTCOME_LABELS as LABELS
    from newsletter.inbox import Outcome

    table = Table(title=f"Postfach {report.folder}" + (" (Probelauf: nichts geändert)" if report.dry_run else ""),
                  title_justify="left", show_header=False, padding=(0, 2))
    table.add_column(style="dim")
    table.add_column(justify="right")
    for outcome, label in LABELS.items():
        if report.count(outcome):
            table.add_row(label, str(report.count(outcome)))
    if not report.handled:
        table.add_row("neue Mails", "0")
    out.print(table)
    for handled in report.handled:
        if handled.outcome in (Outcome.BOUNCED, Outcome.SOFT_LIMIT, Outcome.SOFT, Outcome.POLICY):
            why = f" ({handled.status} {handled.detail})".rstrip() if handled.status or handled.detail else ""
            out.print(Text(f"  {LABELS[handled.outcome].split(' (')[0]}: {handled.address}, {handled.issue}{why}"),
                      soft_wrap=True)
        elif handled.outcome in (Outcome.COMPLAINT, Outcome.UNSUBSCRIBED):
            note = f" ({handled.note})" if handled.note else ""
            out.print(Text(f"  abgemeldet: {handled.address}{note}"), soft_wrap=True)
        elif handled.outcome is Outcome.REPLY:
            out.print(Text(f"  Antwort: {handled.detail}"), soft_wrap=True)
    if report.count(Outcome.POLICY):
        out.print("Ablehnungen wie 5.7.x betreffen deinen Versand, nicht die Leser:innen: "
                  "`newsletter doctor` prüft SPF, DKIM und DMARC deiner Domain.", soft_wrap=True)
    for note in report.notes:
        out.print(Text(f"Hinweis: {note}"), soft_wrap=True)
    if report.moved:
        out.print(f"{report.moved} Mail(s) in die Newsletter-Ordner verschoben; gelöscht wurde nichts.", soft_wrap=True)
