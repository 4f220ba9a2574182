"""Commands for sending: send and status. The library decides; this module asks and prints."""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from newsletter.cli.app import app, confirm, current_workspace, err, out, print_json
from newsletter.errors import NewsletterError

if TYPE_CHECKING:  # the send path (rendering, premailer) loads when a send runs, not for `status`
    from newsletter.send import SendPlan, SendRun, SendSummary
    from newsletter.workspace import Workspace

LABELS = {
    "sent": "gesendet", "pending": "ausstehend", "sending": "wird gesendet", "deferred": "zurückgestellt",
    "failed": "fehlgeschlagen", "unknown": "unklar", "skipped": "übersprungen (abgemeldet)",
}
SMTP_ESTIMATE = 20.0  # messages/s a distant provider takes over one connection, for the estimate
OUTBOX_ESTIMATE = 1000.0  # messages/s into the outbox (benchmarks/README.md)
ISSUE_ARG = typer.Argument(..., help="Die Ausgabe, z. B. issues/2026-12-innehalten.md", show_default=False)
EXIT_HELP = ("Exit-Codes: 0 alle gesendet · 1 Fehler (z. B. Anmeldung) · 3 vom Server angehalten · "
             "4 einige warten (zurückgestellt, Tageslimit) · 5 einige fehlgeschlagen oder unklar · 130 Strg+C")


@app.command(epilog=EXIT_HELP)
def send(
    issue: str = ISSUE_ARG,
    yes: bool = typer.Option(False, "--yes", "-y", help="Nicht nachfragen (für Skripte)."),
    test: list[str] = typer.Option([], "--test", help="Nur eine [TEST]-Kopie an diese Adresse (mehrfach möglich)."),
    dry_run_: bool = typer.Option(False, "--dry-run", help="Alle Nachrichten bauen und prüfen, Anmeldung am "
                                  "Server testen, nichts senden."),
    offline: bool = typer.Option(False, "--offline", help="Mit --dry-run: nur bauen und prüfen, ohne Server."),
    retry_unknown: bool = typer.Option(False, "--retry-unknown",
                                       help="Nachrichten in unklarem Zustand erneut senden (evtl. doppelt)."),
    retry_failed: bool = typer.Option(False, "--retry-failed",
                                      help="Fehlgeschlagene erneut versuchen (nach einem behobenen Serverproblem)."),
    json_output: bool = typer.Option(False, "--json", help="Zusammenfassung als JSON (braucht --yes)."),
    skip_inbox: bool = typer.Option(False, "--skip-inbox", help="Das Postfach ([imap]) vorher nicht lesen."),
) -> None:
    """Sendet eine Ausgabe an alle aktiven, bestätigten Abonnent:innen, genau einmal.

    Nach einem Abbruch (Strg+C, Absturz, Tageslimit, Pause des Anbieters) setzt derselbe Befehl
    genau dort fort.

    Beispiel: [bold]newsletter send issues/2026-12-innehalten.md[/]
    Beispiel: [bold]newsletter send issues/2026-12-innehalten.md --test ich@example.org[/]
    """
    from newsletter.issue import parse_issue
    from newsletter.send import plan_send, send_test_copies

    workspace = current_workspace()
    parsed = parse_issue(workspace.resolve_issue(issue))
    if test:
        for copy in send_test_copies(workspace, parsed, test):
            out.print(f"[green]✓[/] Testkopie an {copy.address} ({copy.transport})", soft_wrap=True)
        from newsletter.render import archive_url

        page = archive_url(workspace.config, parsed)
        if page and not (workspace.state_dir / "archive" / f"{parsed.slug}.html").exists():
            out.print(f"Hinweis: „Im Browser ansehen“ führt zu {page}; die Seite ist noch nicht online, "
                      "sie erscheint erst mit dem Versand.", soft_wrap=True, markup=False)
        return
    plan = plan_send(workspace, parsed, mailbox=not skip_inbox, dry_run=dry_run_)
    if dry_run_:
        _print_dry_run(workspace, plan, offline)
        return
    again = plan.again(retry_unknown, retry_failed)
    if plan.already is not None and plan.to_send == 0 and not again:
        _nothing_to_do(workspace, plan, json_output)
    count = plan.to_send + again
    if not json_output:
        _print_plan(plan, count)
        for finding in plan.report.warnings:
            out.print(Text.assemble(("Hinweis: ", "yellow"), str(finding)), soft_wrap=True)
    if not confirm(f"An {count} Abonnent:innen senden?", yes):
        out.print("Nichts gesendet.")
        raise typer.Exit(0)
    summary = _send(workspace, plan, retry_unknown, retry_failed, quiet=json_output)
    if json_output:
        print_json(summary.to_json())
    else:
        _print_summary(workspace, plan, summary)
    raise typer.Exit(summary.exit_code)


def _nothing_to_do(workspace: Workspace, plan: SendPlan, json_output: bool) -> NoReturn:
    """Every row has its outcome; the exit code still says whether all of them were sent."""
    from newsletter.send import Outcome, SendSummary

    counts = plan.already or {}
    outcome = Outcome.FAILURES if counts.get("failed") or counts.get("unknown") else Outcome.COMPLETE
    summary = SendSummary(counts=counts, outcome=outcome, transport=plan.transport, seconds=0.0)
    if json_output:
        print_json(summary.to_json())
    else:
        done = "vollständig versendet" if outcome is Outcome.COMPLETE else "abgeschlossen, aber nicht an alle"
        out.print(f"[green]✓[/] {plan.issue.path.name} ist bereits {done}; nichts zu tun.", soft_wrap=True)
        _print_counts(counts)
        for line in _closing_lines(workspace, plan, summary)[outcome is Outcome.COMPLETE:]:
            out.print(line, soft_wrap=True)
    raise typer.Exit(summary.exit_code)


def _refresh_archive(workspace: Workspace) -> str:
    """The mail's "view in browser" link points into the archive: keep it current with every send."""
    from newsletter.archive import build_archive

    try:
        build_archive(workspace)
    except NewsletterError as exc:
        return f"Archiv nicht aktualisiert: {exc}"
    return ""


def _send(workspace: Workspace, plan: SendPlan, retry_unknown: bool, retry_failed: bool,
          quiet: bool) -> SendSummary:
    from newsletter.send import Event, send_issue

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=out, transient=False, disable=quiet) as bar:
        task: list[TaskID] = []

        def on_start(total: int, done: int) -> None:
            task.append(bar.add_task("Versand", total=total, completed=done))

        def progress(event: Event, note: str) -> None:
            if event in (Event.SENT, Event.FAILED, Event.UNKNOWN):
                bar.advance(task[0])
            elif event is Event.PAUSE:
                bar.update(task[0], description=f"Pause {note}"[:60])
            elif event is Event.WAITING:
                bar.update(task[0], description="Warte auf Wiederholung")
            elif event is Event.SENDING:
                bar.update(task[0], description="Versand")

        with _stop_on_ctrl_c() as runs:
            return send_issue(workspace, plan, retry_unknown=retry_unknown, retry_failed=retry_failed,
                              progress=progress, on_start=on_start, refresh_archive=_refresh_archive,
                              on_run=runs.append)


class RateColumn(ProgressColumn):
    """Messages per second, worked out when the bar is drawn (10× a second), not per message."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.0f}/s" if task.speed else "", style="progress.data.speed")


@contextlib.contextmanager
def _stop_on_ctrl_c() -> Iterator[list[SendRun]]:
    """First Ctrl-C: finish the message in flight, then stop. Second Ctrl-C: stop at once."""
    runs: list[SendRun] = []

    def handler(signum: int, frame: object) -> None:
        from newsletter.send import Outcome

        if not runs or runs[0].stop.is_set():
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        runs[0].halt(Outcome.INTERRUPTED)
        err.print("\nHalte an, sobald die laufende Nachricht fertig ist …", soft_wrap=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield runs
    finally:
        signal.signal(signal.SIGINT, previous)


def _print_plan(plan: SendPlan, count: int) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    grid.add_row("Betreff", Text(plan.issue.subject))
    grid.add_row("Empfänger:innen", f"{count}" + (" (Fortsetzung)" if plan.already is not None else ""))
    grid.add_row("Versand über", Text(plan.transport))
    if plan.rate:
        grid.add_row("Tempo", f"höchstens {plan.rate * 3600:.0f} pro Stunde")
        grid.add_row("Dauer etwa", _duration(count / plan.rate))
    elif plan.transport.startswith("SMTP"):
        grid.add_row("Tempo", Text("ohne Grenze ([smtp] rate_limit), so schnell der Server annimmt"))
        grid.add_row("Dauer etwa", f"{_duration(count / SMTP_ESTIMATE)} bei {SMTP_ESTIMATE:.0f} Mails pro Sekunde")
    else:
        grid.add_row("Dauer etwa", _duration(count / OUTBOX_ESTIMATE))
    if plan.last_stop:
        grid.add_row("Zuletzt", Text(plan.last_stop))
    if plan.mailbox:
        grid.add_row("Postfach", Text(plan.mailbox))
    elif plan.mailbox_problem:
        grid.add_row("Postfach", Text(f"nicht gelesen: {plan.mailbox_problem}", style="yellow"))
    out.print(Panel(grid, title=plan.issue.path.name, title_align="left", border_style="green"))


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "unter einer Sekunde"
    if seconds < 90:
        return f"{seconds:.0f} Sekunden"
    if seconds < 5400:
        return f"{seconds / 60:.0f} Minuten"
    return f"{seconds / 3600:.1f} Stunden"


def _when(timestamp: float) -> str:
    moment = dt.datetime.fromtimestamp(timestamp).astimezone()
    today = dt.datetime.now().astimezone().date()
    return moment.strftime("%H:%M") if moment.date() == today else moment.strftime("%d.%m.%Y %H:%M")


def _print_counts(counts: dict[str, int]) -> None:
    from newsletter.journal import STATES  # the journal (and filelock) only where a command needs it

    table = Table(show_header=False, box=None, padding=(0, 2))
    for state in STATES:
        if counts.get(state):
            table.add_row(LABELS[state], str(counts[state]))
    out.print(table)


def _print_summary(workspace: Workspace, plan: SendPlan, summary: SendSummary) -> None:
    from newsletter.journal import STATES

    if summary.archive_note:
        err.print(Text.assemble(("Hinweis: ", "yellow"), summary.archive_note), soft_wrap=True)
    if summary.recovered_unknown:
        err.print(f"{summary.recovered_unknown} Nachricht(en) waren beim letzten Abbruch mitten im Versand; "
                  "sie gelten als [bold]unklar[/] und werden nicht erneut gesendet.", soft_wrap=True)
    if summary.content_changed:
        err.print("[yellow]Hinweis:[/] die Ausgabe wurde seit Versandbeginn geändert; "
                  "die restlichen Empfänger:innen bekommen die neue Fassung.", soft_wrap=True)
    counts = summary.counts
    table = Table(title="Zusammenfassung", title_justify="left", show_header=False, padding=(0, 2))
    table.add_column(style="dim")
    table.add_column(justify="right")
    for state in STATES:
        if counts.get(state):
            table.add_row(LABELS[state], str(counts[state]))
    table.add_row("in diesem Lauf", f"{summary.delivered_now} in {_duration(summary.seconds)}")
    table.add_row("Versand über", Text(summary.transport))
    out.print(table)
    for problem in summary.failed_now:
        out.print(Text(f"  fehlgeschlagen: {problem.email} ({problem.reply})"), soft_wrap=True)
    for address in summary.bounced_now:
        out.print(Text(f"  als unzustellbar markiert: {address}"), soft_wrap=True)
    if summary.delivered_now and workspace.config.smtp.host:
        if workspace.config.imap.host:
            out.print("Unzustellbares kommt oft erst Stunden später zurück: morgen [bold]newsletter inbox[/] "
                      "ausführen (oder vor dem nächsten Versand, das tut send selbst).", soft_wrap=True)
        else:
            out.print(Text("Tipp: mit [imap] in newsletter.toml liest newsletter inbox dein Postfach und trägt "
                           "Unzustellbare und Abmeldungen per Mail von selbst aus."), soft_wrap=True)
    for line in _closing_lines(workspace, plan, summary):
        out.print(line, soft_wrap=True)


def _shown_path(workspace: Workspace, path: Path) -> str:
    """The issue as the author would type it: relative to the workspace when it is inside."""
    try:
        return str(path.relative_to(workspace.root.resolve()))
    except ValueError:
        return str(path)


def _closing_lines(workspace: Workspace, plan: SendPlan, summary: SendSummary) -> list[Text]:
    """The last lines: how it ended, the server's own words if it stopped us, and the one command
    that continues."""
    from newsletter.send import Outcome

    issue = _shown_path(workspace, plan.issue.path)
    again = f"newsletter send {issue}"
    counts, outcome = summary.counts, summary.outcome
    waiting = counts.get("pending", 0) + counts.get("deferred", 0)
    reply = f" Antwort des Servers: „{summary.stop_reply}“." if summary.stop_reply else ""
    lines: list[Text] = []
    if outcome is Outcome.COMPLETE:
        lines.append(Text("Fertig.", style="green"))
    elif outcome is Outcome.PROVIDER_LIMIT:
        lines.append(Text(f"Vom Server angehalten: er nimmt gerade keine Nachrichten an.{reply} "
                          f"{waiting} warten, niemand ist verloren. Später weiter mit: {again}"))
    elif outcome is Outcome.DAILY_LIMIT:
        lines.append(Text(f"Tageslimit erreicht ([smtp] daily_limit); {waiting} warten. Morgen weiter mit: {again}"))
    elif outcome is Outcome.INTERRUPTED:
        lines.append(Text(f"Angehalten. Genau hier weiter mit: {again}"))
    elif outcome is Outcome.WAITING:
        deferred = counts.get("deferred", 0)
        when = f", der nächste Versuch ab {_when(summary.next_retry)}" if summary.next_retry else ""
        last = f" Letzte Antwort des Servers: „{summary.stop_reply}“." if summary.stop_reply else ""
        lines.append(Text(f"{deferred} Nachricht(en) zurückgestellt (vorübergehender Fehler){when}.{last} "
                          f"Weiter mit: {again}"))
    if counts.get("failed") and outcome is not Outcome.INTERRUPTED:
        lines.append(Text(f"{counts['failed']} fehlgeschlagen; die Antworten des Servers zeigt: newsletter status "
                          f"{issue} --failed. Nur nach einem behobenen Problem erneut: {again} --retry-failed"))
    if counts.get("unknown"):
        lines.append(Text(f"{counts['unknown']} Nachricht(en) sind unklar (Abbruch mitten im Senden). "
                          f"Sie könnten angekommen sein; erneut nur mit {again} --retry-unknown"))
    return lines


def _print_dry_run(workspace: Workspace, plan: SendPlan, offline: bool) -> None:
    from newsletter.send import dry_run

    if plan.mailbox or plan.mailbox_problem:
        out.print(Text(f"Postfach (Probelauf, nichts geändert): {plan.mailbox or plan.mailbox_problem}"),
                  soft_wrap=True)
    result = dry_run(workspace, plan, offline)
    for problem in result.problems:
        err.print(Text(f"{problem.email}: {problem.reply}"), soft_wrap=True)
    if result.problems:
        raise NewsletterError(f"Probelauf: {len(result.problems)} Problem(e) in {result.messages} Nachrichten")
    way = f"; Verbindung und Anmeldung bei {result.connection} in Ordnung" if result.connection else ""
    out.print(f"[green]✓[/] Probelauf: {result.messages} Nachrichten gebaut und geprüft{way}, nichts gesendet.",
              soft_wrap=True)


@app.command()
def status(
    issue: str | None = typer.Argument(None, help="Die Ausgabe; ohne Angabe alle Versände.", show_default=False),
    json_output: bool = typer.Option(False, "--json", help="Ergebnis als JSON."),
    failed: bool = typer.Option(False, "--failed", help="Fehlgeschlagene, unklare und wartende Adressen "
                                "mit der Antwort des Servers auflisten."),
) -> None:
    """Zeigt den Stand eines Versands aus dem Versandprotokoll.

    Beispiel: [bold]newsletter status issues/2026-12-innehalten.md --failed[/]
    """
    workspace = current_workspace()
    slug = None
    if issue is not None:
        from newsletter.issue import parse_issue
        from newsletter.journal import journal_path

        slug = parse_issue(workspace.resolve_issue(issue)).slug
        if not journal_path(workspace.journal_dir, slug).exists():
            raise NewsletterError(f"{slug}: wurde noch nicht gesendet")
    from newsletter.status import send_status

    results = send_status(workspace, slug, problems=failed)
    if json_output:
        data = [result.to_json(failed) for result in results]
        print_json(data[0] if issue is not None else data)
        return
    if not results:
        out.print("Noch kein Versand.")
    for result in results:
        out.print(f"[bold]{result.issue}[/]  {result.subject}", soft_wrap=True)
        _print_counts(result.counts)
        if result.last_reply:
            out.print(Text(f"  zuletzt angehalten mit: {result.last_reply}"), soft_wrap=True)
        if any(result.bounces.values()):
            words = {"hard": "unzustellbar", "soft": "vorübergehend unzustellbar", "policy": "Versand abgelehnt"}
            found = ", ".join(f"{n} {words[k]}" for k, n in result.bounces.items() if n)
            out.print(Text(f"  später zurückgekommen (newsletter inbox): {found}"), soft_wrap=True)
        for problem in result.problems:
            reply = f" ({problem.code} {problem.reply or ''})".rstrip() if problem.code else ""
            out.print(Text(f"  {LABELS[problem.state]}: {problem.email}{reply}"), soft_wrap=True)
