"""Commands for writing: init, new, render, preview, check."""

from __future__ import annotations

import shlex
import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from typer.core import TyperArgument

from newsletter.cli.app import app, current_workspace, out, print_json, usage

if TYPE_CHECKING:  # rendering and checking load when a command needs them, not for --help
    from newsletter.check import CheckReport
    from newsletter.preview import Preview

ISSUE_ARG = typer.Argument(..., help="Die Ausgabe, z. B. issues/2026-12-innehalten.md", show_default=False)


@app.command()
def init(
    directory: Path = typer.Argument(Path(), help="Ordner für den neuen Arbeitsbereich (sonst der aktuelle).",
                                     show_default=False),
) -> None:
    """Legt einen Arbeitsbereich an: newsletter.toml, issues/, templates/, subscribers/, state/.

    Vorhandene Dateien bleiben unverändert.

    Beispiel: [bold]newsletter init mein-newsletter[/]
    """
    from newsletter.workspace import init_workspace

    result = init_workspace(directory)
    for path in result.created:
        out.print(f"  angelegt    {path}")
    for path in result.kept:
        out.print(f"  [dim]vorhanden   {path} (unverändert)[/]")
    here = directory.resolve() == Path.cwd().resolve()
    steps = [] if here else [f"[bold]cd {escape(shlex.quote(str(directory)))}[/]"]
    steps += ["Absender, base_url und Impressum in newsletter.toml eintragen", "[bold]newsletter new \"Titel\"[/]"]
    out.print("\nAls Nächstes: " + ", dann ".join(steps) + ".", soft_wrap=True)


@app.command()
def new(
    ctx: typer.Context,
    title: str | None = typer.Argument(None, help="Titel der Ausgabe; daraus werden Betreff und Dateiname. "
                                       "Mit --from: sonst die erste Zeile, wenn sie eine Überschrift ist.",
                                       show_default=False),
    month: str | None = typer.Option(None, "--month", "-m", help="Monat JJJJ-MM (sonst der aktuelle)."),
    from_file: Path | None = typer.Option(None, "--from", help="Aus diesem Text (.txt, .md, aus Word als "
                                          "„Nur Text“ gespeichert): Absätze, Überschriften, Listen und Links "
                                          "werden zu Markdown.", show_default=False),
) -> None:
    """Legt eine neue Ausgabe in issues/ an (überschreibt nie).

    Mit --from wird ein eingefügter Text (etwa ein Blogartikel) zur Ausgabe: Leerzeilen zwischen den Absätzen,
    `##` vor Zeilen, die Überschriften sind, Adressen in eckigen Klammern als Links. Was geändert wurde, steht
    danach da.

    Beispiel: [bold]newsletter new "Krisen als Chance" --month 2026-12[/]
    Beispiel: [bold]newsletter new --from artikel.txt[/]
    """
    if from_file is None:
        if title is None:
            argument = next(p for p in ctx.command.params if isinstance(p, TyperArgument))
            raise usage.MissingParameter(ctx=ctx, param=argument)
        from newsletter.issue import draft_issue

        out.print(str(draft_issue(current_workspace(), title, month)), soft_wrap=True)
        return
    from newsletter.draft import draft_from_file

    draft = draft_from_file(current_workspace(), from_file, title, month)
    out.print(str(draft.path), soft_wrap=True)
    out.print(f"aus {draft.source} ({draft.encoding}):", soft_wrap=True, markup=False)
    if draft.paragraphs_split:
        out.print(f"  {draft.paragraphs_split} Zeilen mit einer Leerzeile als eigene Absätze abgesetzt",
                  soft_wrap=True)
    for line, what in draft.changes:
        out.print(Text(f"  Zeile {line}: {what}"), soft_wrap=True)
    if not draft.paragraphs_split and not draft.changes:
        out.print("  unverändert übernommen")
    out.print(f"Bitte Betreff und Vorschautext oben in der Datei prüfen, dann [bold]newsletter preview "
              f"{draft.path.relative_to(Path.cwd()) if draft.path.is_relative_to(Path.cwd()) else draft.path}[/].",
              soft_wrap=True)


@app.command()
def render(
    issue: str = ISSUE_ARG,
    out_dir: Path | None = typer.Option(None, "--out", "-o", help="Zielordner (sonst state/build/)."),
    as_email: str | None = typer.Option(None, "--as", help="Für diese Abonnentin personalisieren."),
) -> None:
    """Erzeugt die fertige HTML- und Textfassung einer Ausgabe als Dateien.

    Beispiel: [bold]newsletter render issues/2026-12-innehalten.md --out build/[/]
    """
    workspace = current_workspace()
    from newsletter.issue import parse_issue
    from newsletter.preview import build_preview

    preview = build_preview(workspace, parse_issue(workspace.resolve_issue(issue)), as_email)
    target = out_dir or workspace.build_dir
    target.mkdir(parents=True, exist_ok=True)
    slug = preview.report.issue.slug
    html_path, text_path = target / f"{slug}.html", target / f"{slug}.txt"
    html_path.write_text(preview.html, encoding="utf-8")
    text_path.write_text(preview.text, encoding="utf-8")
    out.print(str(html_path), soft_wrap=True)
    out.print(str(text_path), soft_wrap=True)


@app.command()
def preview(
    issue: str = ISSUE_ARG,
    as_email: str | None = typer.Option(None, "--as", help="So sieht es diese Abonnentin."),
    text: bool = typer.Option(False, "--text", help="Nur den exakten Textteil ausgeben."),
    html: Path | None = typer.Option(None, "--html", help="Personalisiertes HTML in diese Datei schreiben."),
    open_browser: bool = typer.Option(False, "--open", help="HTML im Browser öffnen."),
) -> None:
    """Zeigt die Ausgabe im Terminal, so wie eine Abonnentin sie bekäme.

    Beispiel: [bold]newsletter preview issues/2026-12-innehalten.md --as anna@example.org[/]
    """
    workspace = current_workspace()
    from newsletter.issue import parse_issue
    from newsletter.preview import build_preview

    shown = build_preview(workspace, parse_issue(workspace.resolve_issue(issue)), as_email)
    if text:
        print(shown.text)
        return
    if html or open_browser:
        target = html or workspace.build_dir / f"{shown.report.issue.slug}.preview.html"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(shown.html, encoding="utf-8")
        out.print(f"HTML: {target}", soft_wrap=True)
        if open_browser:
            webbrowser.open(target.resolve().as_uri())
        if html and not open_browser:
            return
    _print_preview(shown)


def _print_preview(shown: Preview) -> None:
    issue = shown.report.issue
    head = Table.grid(padding=(0, 2))
    head.add_column(style="dim")
    head.add_column()
    for label, value in (
        ("Von", shown.sender), ("An", shown.to), ("Betreff", issue.subject),
        ("Vorschau", issue.preheader or "–"),
        ("Größe", f"HTML {_kb(len(shown.html.encode()))}, Text {_kb(len(shown.text.encode()))}"),
    ):
        head.add_row(label, Text(value))
    out.print(Panel(head, title=issue.path.name, title_align="left", border_style="green"))
    from rich.markdown import Markdown  # markdown-it, only for a preview

    out.print(Markdown(shown.markdown, hyperlinks=False))
    if issue.button_text:
        out.print(Panel(Text(f"{issue.button_text} → {issue.button_url}"), expand=False))
    if shown.links:
        out.print("\n[bold]Links[/]")
        for number, link in enumerate(shown.links, start=1):
            out.print(f"  [{number}] {link}", soft_wrap=True, markup=False)
    _print_findings(shown.report)


def _kb(size: int) -> str:
    return f"{size / 1000:.1f} KB"


def _print_findings(report: CheckReport) -> None:
    for finding in report.errors:
        out.print(Text.assemble(("Fehler: ", "bold red"), str(finding)), soft_wrap=True)
    for finding in report.warnings:
        out.print(Text.assemble(("Hinweis: ", "yellow"), str(finding)), soft_wrap=True)


@app.command()
def check(
    issue: str = ISSUE_ARG,
    json_output: bool = typer.Option(False, "--json", help="Ergebnis als JSON."),
) -> None:
    """Prüft eine Ausgabe vor dem Versand. Exit-Code 1 bei Fehlern, 0 bei nur Hinweisen.

    Beispiel: [bold]newsletter check issues/2026-12-innehalten.md[/]
    """
    workspace = current_workspace()
    from newsletter.check import check_issue
    from newsletter.issue import parse_issue

    report = check_issue(workspace, parse_issue(workspace.resolve_issue(issue)))
    if json_output:
        print_json({"ok": report.ok, "html_bytes": report.html_bytes,
                    "errors": [str(f) for f in report.errors],
                    "warnings": [str(f) for f in report.warnings]})
    else:
        _print_findings(report)
        if report.ok:
            size = f" (HTML {_kb(report.html_bytes)})" if report.html_bytes else ""
            out.print(f"[green]✓[/] {report.issue.path.name} ist bereit zum Versand{size}.", soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)
