"""The command that checks the sender's setup: doctor."""

from __future__ import annotations

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from newsletter.cli.app import app, current_workspace, out, print_json

STYLES = {"ok": "green", "warn": "yellow", "error": "bold red"}


@app.command()
def doctor(
    json_output: bool = typer.Option(False, "--json", help="Ergebnis als JSON."),
    nameserver: str | None = typer.Option(
        None, "--nameserver", help="Diesen DNS-Server fragen statt des eingestellten, z. B. 9.9.9.9 "
        "(hilfreich, wenn eine Änderung beim Anbieter hier noch nicht angekommen ist).", show_default=False),
) -> None:
    """Prüft deinen Absender: ob Gmail & Co. Mails von deiner Adresse trauen.

    Sieht im DNS nach SPF, DKIM, DMARC und MX deiner Absender-Domain und prüft, ob base_url
    über HTTPS antwortet. Zu jedem Problem steht ein Satz, worum du deinen Anbieter bitten kannst.
    Exit-Code 1 bei Fehlern (✗), 0 bei Hinweisen (⚠).

    Beispiel: [bold]newsletter doctor[/]
    """
    from newsletter.doctor import Dns, remember, run_doctor  # dnspython: only doctor needs it

    workspace = current_workspace()
    config = workspace.config
    report = run_doctor(config, Dns(nameserver))
    remember(report, config, workspace.state_dir)
    if json_output:
        print_json(report.as_dict())
    else:
        provider = f" über {report.provider}" if report.provider else ""
        table = Table(box=box.SIMPLE, show_header=True, title=f"Absender {report.domain}{provider}",
                      title_justify="left", title_style="bold")
        table.add_column("", no_wrap=True)
        table.add_column("Prüfung", no_wrap=True)
        table.add_column("Ergebnis", overflow="fold")
        for finding in report.findings:
            table.add_row(Text(finding.symbol, style=STYLES[finding.status]), finding.title, Text(finding.found))
        out.print(table)
        advice = [f for f in report.findings if f.advice and f.status != "ok"]
        for finding in advice:
            out.print(Text.assemble((f"{finding.symbol} {finding.title}: ", STYLES[finding.status]), finding.advice),
                      soft_wrap=True)
        if not advice:
            out.print("[green]✓[/] Alles eingerichtet: dein Anbieter beglaubigt deine Mails.")
    if not report.ok:
        raise typer.Exit(1)
