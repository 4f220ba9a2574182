"""Commands for sending: send and status."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

import typer
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from newsletter.archive import build_archive
from newsletter.check import check_issue
from newsletter.cli.app import app, confirm, current_workspace, err, out, print_json
from newsletter.errors import NewsletterError
from newsletter.issue import Issue, parse_issue
from newsletter.journal import FAILED, STATES, UNKNOWN, SendJournal, journal_path
from newsletter.message import MessageFactory, Recipient, validate_message
from newsletter.preview import SAMPLE, recipient_merge_values
from newsletter.send import (
    DAILY_LIMIT,
    DONE,
    INTERRUPTED,
    PROVIDER_LIMIT,
    WAITING,
    Audience,
    SendRun,
    SendSummary,
    content_hash,
    open_journal,
    options_from,
    plan_send,
)
from newsletter.subscribers import SubscriberStore, normalize_email
from newsletter.texts import texts
from newsletter.transport import Transport, make_transport, smtp_password
from newsletter.workspace import Workspace

LABELS = {
    "sent": "gesendet", "pending": "ausstehend", "sending": "wird gesendet", "deferred": "zurückgestellt",
    "failed": "fehlgeschlagen", "unknown": "unklar", "skipped": "übersprungen (abgemeldet)",
}
SMTP_ESTIMATE = 20.0  # messages/s a distant provider takes over one connection, for the estimate
OUTBOX_ESTIMATE = 1000.0  # messages/s into the outbox (benchmarks/README.md)
ISSUE_ARG = typer.Argument(..., help="Die Ausgabe, z. B. issues/2026-12-innehalten.md", show_default=False)


@app.command()
def send(
    issue: str = ISSUE_ARG,
    yes: bool = typer.Option(False, "--yes", "-y", help="Nicht nachfragen (für Skripte)."),
    test: list[str] = typer.Option([], "--test", help="Nur eine [TEST]-Kopie an diese Adresse (mehrfach möglich)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Alle Nachrichten bauen und prüfen, nichts senden."),
    retry_unknown: bool = typer.Option(False, "--retry-unknown",
                                       help="Nachrichten in unklarem Zustand erneut senden (evtl. doppelt)."),
    retry_failed: bool = typer.Option(False, "--retry-failed",
                                      help="Fehlgeschlagene erneut versuchen (nach einem behobenen Serverproblem)."),
) -> None:
    """Sendet eine Ausgabe an alle aktiven, bestätigten Abonnent:innen, genau einmal.

    Nach einem Abbruch (Strg+C, Absturz) setzt derselbe Befehl genau dort fort.

    Beispiel: [bold]newsletter send issues/2026-12-innehalten.md[/]
    Beispiel: [bold]newsletter send issues/2026-12-innehalten.md --test ich@example.org[/]
    """
    workspace = current_workspace()
    parsed = parse_issue(workspace.resolve_issue(issue))
    if test:
        _send_test(workspace, parsed, test)
        return
    plan = plan_send(workspace, parsed)
    config = workspace.config
    if dry_run:
        _dry_run(workspace, plan.rendered)
        return
    already = plan.already or {}
    again = (already.get("unknown", 0) if retry_unknown else 0) + (already.get("failed", 0) if retry_failed else 0)
    if plan.already is not None and plan.to_send == 0 and not again:
        out.print(f"[green]✓[/] {parsed.path.name} ist bereits vollständig versendet; nichts zu tun.", soft_wrap=True)
        _print_counts(plan.already)
        return
    transport_factory = _transports(workspace, parsed.slug)
    probe = transport_factory()
    rate = config.smtp.messages_per_second if config.smtp.host else None
    count = plan.to_send + again
    _print_plan(parsed, count, probe.description, rate, plan.already is not None)
    for finding in plan.report.warnings:
        out.print(Text.assemble(("Hinweis: ", "yellow"), str(finding)), soft_wrap=True)
    probe.close()
    if not confirm(f"An {count} Abonnent:innen senden?", yes):
        out.print("Nichts gesendet.")
        raise typer.Exit(0)

    journal = open_journal(workspace, plan)
    try:
        with journal.running():
            _refresh_archive(workspace)  # the page every mail links to exists before the first goes out
            recovered = journal.recover()
            if recovered:
                err.print(f"{recovered} Nachricht(en) waren beim letzten Abbruch mitten im Versand; "
                          "sie gelten als [bold]unklar[/] und werden nicht erneut gesendet.", soft_wrap=True)
            if retry_unknown:
                journal.retry(UNKNOWN)
            if retry_failed:
                journal.retry(FAILED)
            if journal.meta("content") not in (None, content_hash(plan.rendered)):
                err.print("[yellow]Hinweis:[/] die Ausgabe wurde seit Versandbeginn geändert; "
                          "die restlichen Empfänger:innen bekommen die neue Fassung.", soft_wrap=True)
            summary = _run(workspace, journal, plan.rendered, transport_factory, plan.audience)
    finally:
        journal.close()
        _refresh_archive(workspace)  # listed once a message went out; its page goes again if none did
    _print_summary(parsed, summary)
    if summary.reason == INTERRUPTED:
        raise typer.Exit(130)


def _refresh_archive(workspace: Workspace) -> None:
    """The mail's "view in browser" link points into the archive: keep it current with every send."""
    try:
        build_archive(workspace)
    except NewsletterError as exc:
        err.print(Text.assemble(("Hinweis: ", "yellow"), f"Archiv nicht aktualisiert: {exc}"), soft_wrap=True)


def _transports(workspace: Workspace, slug: str) -> Callable[[], Transport]:
    """One transport per connection; the password (maybe from password_command) is asked for once, now."""
    config = workspace.config
    password = smtp_password(config.smtp) if config.smtp.host else ""
    return lambda: make_transport(config.smtp, workspace.outbox_dir / slug, config.path.parent, password)


def _run(workspace: Workspace, journal: SendJournal, rendered, transport_factory,
         audience: Audience | None) -> SendSummary:
    factory = MessageFactory(rendered, workspace.config, workspace.secret())
    total = journal.total()
    done = total - sum(journal.counts()[s] for s in ("pending", "deferred"))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=out, transient=False) as bar:
        task = bar.add_task("Versand", total=total, completed=done)

        def progress(state: str) -> None:
            if state in ("sent", "failed", "unknown"):
                bar.advance(task)
            else:
                bar.update(task, description={"pause": "Pause (Anbieter-Limit)",
                                              "waiting": "Warte auf Wiederholung"}.get(state, "Versand"))

        run = SendRun(journal, factory, transport_factory, SubscriberStore(workspace.subscribers_path),
                      options_from(workspace), workspace.journal_dir, progress=progress, audience=audience)
        with _stop_on_ctrl_c(run):
            return run.run()


class RateColumn(ProgressColumn):
    """Messages per second, worked out when the bar is drawn (10× a second), not per message."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.0f}/s" if task.speed else "", style="progress.data.speed")


@contextlib.contextmanager
def _stop_on_ctrl_c(run: SendRun) -> Iterator[None]:
    """First Ctrl-C: finish the message in flight, then stop. Second Ctrl-C: stop at once."""
    def handler(signum: int, frame: object) -> None:
        if run.stop.is_set():
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        err.print("\nHalte an, sobald die laufende Nachricht fertig ist …", soft_wrap=True)
        run.halt(INTERRUPTED)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _print_plan(issue: Issue, count: int, transport: str, rate: float | None, resuming: bool) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    grid.add_row("Betreff", Text(issue.subject))
    grid.add_row("Empfänger:innen", f"{count}" + (" (Fortsetzung)" if resuming else ""))
    grid.add_row("Versand über", Text(transport))
    if rate:
        grid.add_row("Tempo", f"höchstens {rate * 3600:.0f} pro Stunde")
        grid.add_row("Dauer etwa", _duration(count / rate))
    elif transport.startswith("SMTP"):
        grid.add_row("Tempo", "ohne Grenze ([smtp] rate_limit), so schnell der Server annimmt")
        grid.add_row("Dauer etwa", f"{_duration(count / SMTP_ESTIMATE)} bei {SMTP_ESTIMATE:.0f} Mails pro Sekunde")
    else:
        grid.add_row("Dauer etwa", _duration(count / OUTBOX_ESTIMATE))
    out.print(Panel(grid, title=issue.path.name, title_align="left", border_style="green"))


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "unter einer Sekunde"
    if seconds < 90:
        return f"{seconds:.0f} Sekunden"
    if seconds < 5400:
        return f"{seconds / 60:.0f} Minuten"
    return f"{seconds / 3600:.1f} Stunden"


def _print_counts(counts: dict[str, int]) -> None:
    table = Table(show_header=False, box=None, padding=(0, 2))
    for state in STATES:
        if counts.get(state):
            table.add_row(LABELS[state], str(counts[state]))
    out.print(table)


def _print_summary(issue: Issue, summary: SendSummary) -> None:
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
    for address, code, reply in summary.failed_now:
        out.print(Text(f"  fehlgeschlagen: {address} ({code} {reply})"), soft_wrap=True)
    for address in summary.bounced_now:
        out.print(Text(f"  als unzustellbar markiert: {address}"), soft_wrap=True)
    again = f"newsletter send {issue.path}"
    messages = {
        DONE: "[green]Fertig.[/]",
        WAITING: f"Einige Nachrichten sind zurückgestellt (vorübergehender Fehler). Später erneut: [bold]{again}[/]",
        DAILY_LIMIT: f"Tageslimit erreicht. Morgen geht es weiter mit: [bold]{again}[/]",
        PROVIDER_LIMIT: f"Der Anbieter bremst den Versand. Später weiter mit: [bold]{again}[/]",
        INTERRUPTED: f"Angehalten. Genau hier weiter mit: [bold]{again}[/]",
    }
    out.print(messages[summary.reason], soft_wrap=True)
    if counts.get("unknown"):
        out.print(f"{counts['unknown']} Nachricht(en) sind [bold]unklar[/] (Abbruch mitten im Senden). "
                  f"Sie könnten angekommen sein; erneut nur mit [bold]{again} --retry-unknown[/]", soft_wrap=True)


def _send_test(workspace: Workspace, issue: Issue, addresses: list[str]) -> None:
    report = check_issue(workspace, issue)
    if not report.ok or report.rendered is None:
        raise NewsletterError(f"{issue.path.name}: check meldet Fehler: {report.errors[0]}")
    values = recipient_merge_values(workspace, SAMPLE)
    prefix = texts(workspace.config.newsletter.language)["test_prefix"]
    factory = MessageFactory(report.rendered, workspace.config, workspace.secret(), prefix, values)
    config = workspace.config
    transport = make_transport(config.smtp, workspace.outbox_dir / "test", config.path.parent)
    try:
        for address in addresses:
            message = factory.build(Recipient("test", normalize_email(address)))
            delivery = transport.deliver(factory.envelope_from, message.envelope_to, message.data)
            if not delivery.accepted:
                raise NewsletterError(f"{address}: nicht angenommen ({delivery.code} {delivery.reply})")
            out.print(f"[green]✓[/] Testkopie an {address} ({transport.description})", soft_wrap=True)
    finally:
        transport.close()


def _dry_run(workspace: Workspace, rendered) -> None:
    factory = MessageFactory(rendered, workspace.config, workspace.secret())
    people = [s for s in SubscriberStore(workspace.subscribers_path).active()]
    problems = 0
    for person in people:
        message = factory.build(Recipient(person.id, person.email, person.name))
        for problem in validate_message(message.data):
            problems += 1
            err.print(Text(f"{person.email}: {problem}"), soft_wrap=True)
    if problems:
        raise NewsletterError(f"Probelauf: {problems} Problem(e) in {len(people)} Nachrichten")
    out.print(f"[green]✓[/] Probelauf: {len(people)} Nachrichten gebaut und geprüft, nichts gesendet.")


@app.command()
def status(
    issue: str | None = typer.Argument(None, help="Die Ausgabe; ohne Angabe alle Versände.", show_default=False),
    json_output: bool = typer.Option(False, "--json", help="Ergebnis als JSON."),
    failed: bool = typer.Option(False, "--failed", help="Fehlgeschlagene und unklare Adressen auflisten."),
) -> None:
    """Zeigt den Stand eines Versands aus dem Versandprotokoll.

    Beispiel: [bold]newsletter status issues/2026-12-innehalten.md --failed[/]
    """
    workspace = current_workspace()
    if issue is None:
        paths = sorted(workspace.journal_dir.glob("*.sqlite"))
    else:
        slug = parse_issue(workspace.resolve_issue(issue)).slug
        paths = [journal_path(workspace.journal_dir, slug)]
        if not paths[0].exists():
            raise NewsletterError(f"{slug}: wurde noch nicht gesendet")
    results: list[dict[str, Any]] = []
    for path in paths:
        journal = SendJournal(path)
        try:
            counts = journal.counts()
            if not journal.is_running():  # left by a run that died: `send` will call them unknown
                counts["unknown"] += counts.pop("sending")
            rows = journal.rows(("failed", "unknown")) if failed else []
            results.append({
                "issue": path.stem, "subject": journal.meta("subject") or "", "total": journal.total(),
                **{state: counts[state] for state in STATES if state in counts},
                **({"problems": [{"email": r.email, "state": r.state, "code": r.last_code,
                                  "reply": r.last_reply} for r in rows]} if failed else {}),
            })
        finally:
            journal.close()
    if json_output:
        print_json(results[0] if issue is not None else results)
        return
    if not results:
        out.print("Noch kein Versand.")
    for result in results:
        out.print(f"[bold]{result['issue']}[/]  {result['subject']}", soft_wrap=True)
        _print_counts({k: v for k, v in result.items() if k in STATES})
        for problem in result.get("problems", []):
            reply = f" ({problem['code']} {problem['reply'] or ''})".rstrip() if problem["code"] else ""
            out.print(Text(f"  {LABELS[problem['state']]}: {problem['email']}{reply}"), soft_wrap=True)
