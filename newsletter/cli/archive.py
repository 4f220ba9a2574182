"""The archive command: the public web version of every sent issue."""

from __future__ import annotations

from pathlib import Path

import typer

from newsletter.cli.app import app, current_workspace, out


@app.command()
def archive(
    out_dir: Path | None = typer.Option(None, "--out", "-o", help="Zielordner (sonst state/archive/)."),
) -> None:
    """Baut das Web-Archiv: eine Seite je Ausgabe, die Leser:innen erreicht hat, Übersicht und Atom-Feed.

    Eine Ausgabe kommt hinein, sobald die erste Mail an sie hinausgegangen ist, sortiert nach diesem Zeitpunkt.
    Entwürfe, Versände ohne eine einzige zugestellte Mail und Ausgaben mit `archive = false` bleiben draußen.
    Die Dateien lassen sich auf jeden Webspace hochladen; `newsletter serve` zeigt sie auch.

    Beispiel: [bold]newsletter archive --out archiv/[/]
    """
    from newsletter.archive import build_archive  # premailer, mjml: only when the archive is built

    result = build_archive(current_workspace(), out_dir)
    for path in result.written:
        out.print(f"  geschrieben   {path}", soft_wrap=True)
    for path in result.removed:
        out.print(f"  entfernt      {path}", soft_wrap=True)
    out.print(f"{len(result.issues)} Ausgabe(n) im Archiv {result.folder} "
              f"({len(result.written)} geändert, {len(result.unchanged)} unverändert).", soft_wrap=True)
