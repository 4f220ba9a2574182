"""Every --help and every usage mistake in the author's language: no English of the framework, no Python types."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from conftest import invoke, write_issue
from rich.text import Text
from test_send import add_people

from newsletter import __version__
from newsletter.cli import app
from newsletter.cli.helptext import ARGUMENT_NAMES, flow
from newsletter.issue import parse_issue
from newsletter.workspace import Workspace

# What Click and Typer write themselves, and what Python calls its types.
ENGLISH = re.compile(r"Usage|Options|Arguments|Commands|Show this|default:|required|env var|OPTIONS|COMMAND|"
                     r"ARGS|Error|Try |Aborted|DEPRECATED|deprecated|dynamic|range|<=|Input should|Got unexpected|"
                     r"Missing|Invalid|does not|<(?:str|int|float|bool|path|list|NoneType|datetime)\b")
VALUE_TYPE = re.compile(r"<([^<>]*)>")
GERMAN_TYPES = re.compile(r"Text|Zahl(?: \d+–\d+| ab \d+| bis \d+)?|Pfad|Datei|Ordner|Datum"
                          r"|[a-zäöüß]+(?:\|[a-zäöüß]+)+")  # or the choices, as the tables show them


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))


ROOT = typer.main.get_command(app)
COMMANDS = [(), *(path for path, _ in _commands(ROOT))]


def _command(path: tuple[str, ...]):
    command = ROOT
    for name in path:
        command = command.commands[name]
    return command


def _wide(runner, *args: str):
    """The help as a terminal 1000 columns wide draws it: every paragraph on one line."""
    return runner.invoke(app, list(args), env={"COLUMNS": "1000"}, catch_exceptions=False)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "newsletter")
@pytest.mark.parametrize("where", ["workspace", "nowhere"])
def test_every_help_speaks_german_without_python_types(path, where, ws: Workspace, runner, tmp_path: Path,
                                                       monkeypatch) -> None:
    if where == "nowhere":
        monkeypatch.chdir(tmp_path)  # no newsletter.toml: German, the default
    result = _wide(runner, *path, "--help")
    assert result.exit_code == 0
    shown = result.stdout
    assert shown.lstrip().startswith(f"Aufruf: newsletter {' '.join(path)}".rstrip())
    assert not ENGLISH.search(shown), ENGLISH.search(shown).group(0)
    assert "Diese Hilfe zeigen und beenden." in shown
    for value_type in VALUE_TYPE.findall(shown):
        assert GERMAN_TYPES.fullmatch(value_type), value_type
    command = _command(path)
    if hasattr(command, "commands"):
        assert "Optionen" in shown and "Befehle" in shown and "[OPTIONEN] BEFEHL [ARGUMENTE]..." in shown
    for param in command.params:
        if param.param_type_name == "argument":
            assert ARGUMENT_NAMES["de"][param.name] in shown.split("\n\n")[0], param.name  # the usage line


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "newsletter")
def test_help_paragraphs_flow_and_examples_keep_their_lines(path, ws: Workspace, runner) -> None:
    command = _command(path)
    lines = [line.strip(" │") for line in _wide(runner, *path, "--help").stdout.splitlines()]
    for paragraph in flow(command.help or "").split("\n\n"):
        for line in paragraph.split("\n"):
            assert Text.from_markup(line).plain in lines, line
    for param in command.params:
        if getattr(param, "help", None):
            assert any(Text.from_markup(flow(param.help)).plain in line for line in lines), param.help


def test_hard_line_breaks_of_docstrings_are_gone(ws: Workspace, runner) -> None:
    shown = _wide(runner, "serve", "--help").stdout
    assert ("Sie gehört hinter einen HTTPS-Proxy (Caddy oder nginx); base_url in newsletter.toml muss auf sie "
            "zeigen. Anleitung: docs/serve.md. Beenden mit Strg+C.") in shown
    send = [line.strip() for line in _wide(runner, "send", "--help").stdout.splitlines()]
    assert "Beispiel: newsletter send issues/2026-12-innehalten.md" in send
    assert "Beispiel: newsletter send issues/2026-12-innehalten.md --test ich@example.org" in send
    prune = _wide(runner, "subscribers", "prune", "--help").stdout
    assert "nach [web] confirm_days Tagen noch unbestätigt" in prune  # a section name, not markup


def test_an_english_workspace_gets_the_frame_in_english_but_no_python_types(ws: Workspace, runner) -> None:
    config = ws.root / "newsletter.toml"
    config.write_text(config.read_text().replace('language = "de"', 'language = "en"'))
    shown = invoke(runner, "serve", "--help").stdout
    assert "Usage: newsletter serve [OPTIONS]" in shown and "Options" in shown
    assert "<number 1–65535>" in shown and "Show this help and exit." in shown
    assert not re.search(r"<(?:str|int|bool)|x<=", shown)
    assert "Usage: newsletter send [OPTIONS] ISSUE" in invoke(runner, "send", "--help").stdout


def test_the_real_program_helps_in_german(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "newsletter", "--help"], cwd=tmp_path, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0 and "Aufruf: python -m newsletter [OPTIONEN] BEFEHL" in result.stdout
    assert not ENGLISH.search(result.stdout)
    bare = subprocess.run([sys.executable, "-m", "newsletter"], cwd=tmp_path, capture_output=True, text=True,
                          check=False)
    assert "Aufruf: python -m newsletter" in bare.stdout and not ENGLISH.search(bare.stdout + bare.stderr)


LOADED = r"""
import atexit, sys
from newsletter.cli import main
heavy = ("pydantic", "premailer", "cssutils", "mjml", "jinja2", "werkzeug", "imapclient")  # markdown-it: rich's help
atexit.register(lambda: print("loaded:", " ".join(m for m in heavy if m in sys.modules)))
sys.argv = ["newsletter", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("args", [["status"], ["--workspace", ".", "subscribers", "list"], ["send", "--help"],
                                  ["preview", "--help"]], ids=" ".join)
def test_commands_start_without_what_they_do_not_use(args: list[str], ws: Workspace) -> None:
    """A status, a list or a help loads no renderer, no mailbox library, and not pydantic (which
    Typer would import to read a plain text or path argument): a tenth of a second each time."""
    result = subprocess.run([sys.executable, "-c", LOADED, *args], cwd=ws.root, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("loaded:"), result.stdout[-500:]


@pytest.mark.parametrize("path", [path for path in COMMANDS if path], ids=" ".join)
def test_a_usage_mistake_of_every_command_is_one_german_line(path, ws: Workspace, runner) -> None:
    result = invoke(runner, *path, "--gibts-nicht")
    assert result.exit_code == 2
    assert result.stderr.startswith("Fehler: unbekannte Option --gibts-nicht")
    assert result.stderr.count("\n") == 1 and not ENGLISH.search(result.output)
    required = [p for p in _command(path).params if p.param_type_name == "argument" and p.required]
    if required:
        missing = invoke(runner, *path)
        assert missing.exit_code == 2
        assert missing.stderr.startswith(f"Fehler: es fehlt {ARGUMENT_NAMES['de'][required[0].name]} ")
        assert not ENGLISH.search(missing.output)


@pytest.mark.parametrize(("args", "expected"), [
    (["serve", "--port", "abc"], "Fehler: ungültiger Wert für --port, erwartet: eine Zahl von 1 bis 65535"),
    (["serve", "--port", "0"], "Fehler: ungültiger Wert für --port, erwartet: eine Zahl von 1 bis 65535"),
    (["new", "Krisen", "als", "Chance"],
     "Fehler: zu viele Angaben: als Chance (Text mit Leerzeichen gehört in Anführungszeichen)"),
    (["check", "--json=ja", "x"], "Fehler: --json steht allein, ohne Wert"),
    (["subscribers", "add", "a@example.org", "--status", "abgemeldet"],
     "Fehler: ungültiger Wert für --status: „abgemeldet“; möglich: unbestätigt, aktiv"),
    (["new"], "Fehler: es fehlt TITEL"),
])
def test_wrong_values_are_explained_in_german(ws: Workspace, runner, args: list[str], expected: str) -> None:
    result = invoke(runner, *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(expected) and result.stderr.count("\n") == 1, result.stderr
    assert not ENGLISH.search(result.output)


def test_status_takes_the_words_the_table_shows(ws: Workspace, runner) -> None:
    add_people(ws, [("anna@example.org", "Anna", "active"), ("ben@example.org", "Ben", "pending"),
                    ("cem@example.org", "Cem", "unsubscribed")])
    table = invoke(runner, "subscribers", "list").stdout
    assert "aktiv" in table and "unbestätigt" in table and "abgemeldet" in table
    for word, expected in (("aktiv", "anna"), ("Unbestätigt", "ben"), ("unbestaetigt", "ben"),
                           ("abgemeldet", "cem"), ("active", "anna"), ("pending", "ben")):
        result = invoke(runner, "subscribers", "list", "--status", word)
        assert result.exit_code == 0, result.output
        assert f"{expected}@example.org" in result.stdout and result.stdout.count("@example.org") == 1, word
    nobody = invoke(runner, "subscribers", "list", "--status", "unzustellbar")
    assert nobody.stdout.strip() == "Niemand in der Liste mit Status unzustellbar."
    added = invoke(runner, "subscribers", "add", "dora@example.org", "--status", "aktiv")
    assert added.exit_code == 0 and "Hinzugefügt: dora@example.org (aktiv)" in added.stdout
    wrong = invoke(runner, "subscribers", "list", "--status", "weg")
    assert wrong.stderr.startswith("Fehler: ungültiger Wert für --status: „weg“; möglich: aktiv, abgemeldet, "
                                   "unbestätigt, unzustellbar")


def test_version(runner, tmp_path: Path) -> None:
    result = invoke(runner, "--version")
    assert result.exit_code == 0 and result.stdout == f"newsletter {__version__}\n"
    real = subprocess.run([sys.executable, "-m", "newsletter", "--version"], cwd=tmp_path, capture_output=True,
                          text=True, check=False)
    assert (real.returncode, real.stdout) == (0, f"newsletter {__version__}\n")


def test_init_says_where_to_go_next(tmp_path: Path, runner, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(runner, "init", "mein newsletter")
    assert result.exit_code == 0
    assert result.stdout.rstrip().splitlines()[-1] == (
        "Als Nächstes: cd 'mein newsletter', dann Absender, base_url und Impressum in newsletter.toml "
        "eintragen, dann newsletter new \"Titel\".")
    monkeypatch.chdir(tmp_path / "mein newsletter")
    here = invoke(runner, "init")
    assert "cd " not in here.stdout.splitlines()[-1]


@pytest.mark.parametrize(("old", "new", "message"), [
    ('from_name = "Mira Sommerfeld"', "from_name = Mira Sommerfeld",
     'Zeile 4: ungültiges TOML: Text gehört in gerade Anführungszeichen: from_name = "Mira Sommerfeld"'),
    ('[imprint]', '[smtp]\ntimeout = 1,5\n\n[imprint]',
     "Zeile 12: ungültiges TOML: eine Kommazahl steht mit Punkt: timeout = 1.5"),
    ('from_name = "Mira Sommerfeld"', "from_name = „Mira Sommerfeld“",
     'Zeile 4: ungültiges TOML: typografische Anführungszeichen („…“) statt gerader ("…"); die setzt oft die '
     'Autokorrektur. Richtig: from_name = "Mira Sommerfeld"'),
    ('from_name = "Mira Sommerfeld"', 'from_name = "Mira Sommerfeld',
     'Zeile 4: ungültiges TOML: hier fehlt ein schließendes Anführungszeichen. Richtig: from_name = '
     '"Mira Sommerfeld"'),
])
def test_config_mistakes_show_the_right_form(ws: Workspace, runner, old: str, new: str, message: str) -> None:
    config = ws.root / "newsletter.toml"
    config.write_text(config.read_text().replace(old, new, 1))
    result = invoke(runner, "check", str(write_issue(ws, "2026-12-c", "Text.\n")))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr == f"Fehler: {config}: {message}\n"


@pytest.mark.parametrize(("date", "message"), [
    ("02.12.2026", "Zeile 4: ungültiges TOML: ein Datum steht als Jahr-Monat-Tag: date = 2026-12-02 "
                   '(oder als Text in Anführungszeichen: date = "02.12.2026")'),
    ("2026-12-2", "Zeile 4: ungültiges TOML: Monat und Tag stehen zweistellig: date = 2026-12-02"),
    ("31.02.2026", "Zeile 4: ungültiges TOML: 31.02.2026 gibt es nicht als Datum; ein Datum steht als "
                   "Jahr-Monat-Tag, etwa date = 2026-12-01"),
])
def test_a_german_date_in_the_front_matter_is_explained(ws: Workspace, runner, date: str, message: str) -> None:
    path = ws.issues_dir / "2026-12-datum.md"
    path.write_text(f'+++\nsubject = "Impuls"\npreheader = "Ruhe"\ndate = {date}\n+++\n\nText.\n', encoding="utf-8")
    result = invoke(runner, "check", str(path))
    assert result.exit_code == 1
    assert result.stderr == f"Fehler: {path}: {message}\n"


def test_a_german_date_in_quotes_is_a_date(ws: Workspace, runner) -> None:
    path = ws.issues_dir / "2026-12-datum.md"
    path.write_text('+++\nsubject = "Impuls"\npreheader = "Ruhe"\ndate = "02.12.2026"\n+++\n\nText.\n')
    assert invoke(runner, "check", str(path)).exit_code == 0
    assert parse_issue(path).date == dt.date(2026, 12, 2)
