"""Commands for the web endpoint: serve and form."""

from __future__ import annotations

import logging

import typer

from newsletter.cli.app import app, current_workspace, err, out


@app.command()
def serve(
    host: str | None = typer.Option(None, "--host", help="Adresse, an der der Server lauscht "
                                    "(Standard: \\[web] host, sonst 127.0.0.1).", show_default=False),
    port: int | None = typer.Option(None, "--port", min=1, max=65535,
                                    help="Port (Standard: \\[web] port, sonst 8025).", show_default=False),
) -> None:
    """Startet die Web-Anwendung für An- und Abmeldung, die Links in jeder Mail zeigen dorthin.

    Sie gehört hinter einen HTTPS-Proxy (Caddy oder nginx); base_url in newsletter.toml muss auf sie zeigen.
    Anleitung: docs/serve.md. Beenden mit Strg+C.

    Beispiel: [bold]newsletter serve --port 8025[/]
    """
    from newsletter.web import WebApp, create_server  # Werkzeug and waitress: only `serve` needs them

    workspace = current_workspace()
    config = workspace.config
    web_app = WebApp(workspace)
    # Fails now, not at the first sign-up, if the SMTP password is missing.
    from newsletter.transport import make_transport

    transport = make_transport(config.smtp, workspace.outbox_dir / "web", config.path.parent)
    transport.close()
    server = create_server(web_app, host or config.web.host, port or config.web.port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out.print(f"Läuft auf [bold]http://{host or config.web.host}:{port or config.web.port}[/], "
              f"öffentlich unter [bold]{config.base_url}[/]. Beenden mit Strg+C.", soft_wrap=True)
    out.print(f"Bestätigungsmails gehen über: {transport.description}", soft_wrap=True, markup=False)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        web_app.signups.close()  # what was answered is written, and the mails promised go out
    err.print("Server beendet.")


@app.command()
def form() -> None:
    """Gibt das Anmeldeformular als HTML aus, zum Einfügen in deine Website.

    Es schickt die Anmeldung an base_url/subscribe, also an `newsletter serve`.

    Beispiel: [bold]newsletter form > anmeldeformular.html[/]
    """
    from newsletter.web import form_snippet

    typer.echo(form_snippet(current_workspace()))
