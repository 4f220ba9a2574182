"""Commands for the subscriber file: `newsletter subscribers …`."""

from __future__ import annotations

import typer

from newsletter.cli.app import ErrorBoundary, app

subscribers_app = typer.Typer(
    cls=ErrorBoundary, no_args_is_help=True,
    help="Abonnent:innen verwalten: hinzufügen, importieren, anzeigen, abmelden, löschen.",
)
app.add_typer(subscribers_app, name="subscribers")
