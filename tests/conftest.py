"""Shared fixtures: a real workspace in a temp dir, the CLI runner, a real SMTP server on loopback."""

from __future__ import annotations

import os
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_support import browser, offline, page  # noqa: F401 - fixtures for the browser tests
from send_support import BODY
from smtp_server import Mailbox, SmtpServer
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.workspace import Workspace, init_workspace

REPO = Path(__file__).resolve().parent.parent

CONFIG = """\
[newsletter]
name = "Impuls"
language = "de"
from_name = "Mira Sommerfeld"
from_email = "impuls@praxis.example.org"
reply_to = "kontakt@praxis.example.org"
base_url = "https://newsletter.praxis.example.org"
website = "https://praxis.example.org"
consent_text = "Ja, ich möchte den Newsletter erhalten."

[imprint]
name = "Praxis Mira Sommerfeld"
address = "Lindenallee 12\\n10115 Berlin"
email = "kontakt@praxis.example.org"
phone = "+49 30 1234567"
lines = ["Heilpraktikerin für Psychotherapie"]
"""


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's environment: secrets, passwords and workspace come from the test."""
    for name in list(os.environ):
        if name.startswith("NEWSLETTER_"):
            monkeypatch.delenv(name)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """A fresh workspace from `init`, with sender and imprint filled in, as the current directory."""
    root = tmp_path / "ws"
    init_workspace(root)
    (root / "newsletter.toml").write_text(CONFIG, encoding="utf-8")
    monkeypatch.chdir(root)
    return Workspace(root)


def write_issue(ws: Workspace, name: str, body: str, **meta: object) -> Path:
    """Write issues/<name>.md with TOML front matter built from meta."""
    head = {"subject": "Impuls im Dezember", "preheader": "Ein ruhiger Monat", "date": "2026-12-01"}
    head.update(meta)
    lines = []
    for key, value in head.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        else:
            lines.append(f'{key} = "{value}"')
    path = ws.issues_dir / f"{name}.md"
    path.write_text("+++\n" + "\n".join(lines) + "\n+++\n\n" + textwrap.dedent(body), encoding="utf-8")
    return path


def invoke(runner: CliRunner, *args: str, input: str | None = None):
    """Run the CLI like a user would and return the result (stdout and stderr kept apart)."""
    return runner.invoke(app, list(args), input=input, catch_exceptions=False)


@pytest.fixture
def example_workspace(tmp_path: Path) -> Iterator[Path]:
    """A copy of the repository's example workspace."""
    root = tmp_path / "example"
    root.mkdir()
    for name in ("newsletter.toml", "issues", "subscribers", "templates"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name)
        elif source.exists():
            shutil.copy(source, root / name)
    yield root


@pytest.fixture(params=[True, False], ids=["pipelining", "one-by-one"])
def mailbox(request: pytest.FixtureRequest) -> Mailbox:
    """Every send test runs against a server with and without PIPELINING."""
    return Mailbox(pipelining=request.param)


@pytest.fixture
def smtp(mailbox: Mailbox) -> Iterator[SmtpServer]:
    server = SmtpServer(mailbox).start()
    yield server
    server.stop()


@pytest.fixture
def issue(ws: Workspace) -> Path:
    return write_issue(ws, "2026-12-impuls", BODY, subject="Impuls: Größe – „Nähe“ im Dezember")
