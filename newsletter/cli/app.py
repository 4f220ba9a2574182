"""The Typer app, its one error boundary and the helpers every command shares."""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text
from typer._click import exceptions as usage  # Typer >= 0.29 carries its own copy of Click
from typer._click.core import Command, Context, Parameter
from typer._coercion import RuntimeParam, build_runtime_param
from typer._param_types import coerce_cli_path
from typer.core import TyperArgument, TyperOption

from newsletter import __version__
from newsletter.cli.helptext import LocalGroup, argument_name, expected_value
from newsletter.errors import NewsletterError

if TYPE_CHECKING:
    from newsletter.workspace import Workspace

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def debugging() -> bool:
    return os.environ.get("NEWSLETTER_DEBUG", "") not in ("", "0")


def error_line(message: str) -> None:
    """One line on stderr, never wrapped, never read as rich markup."""
    err.print(Text.assemble(("Fehler: ", "bold red"), message), soft_wrap=True)


class ErrorBoundary(LocalGroup):
    """Turns the library's errors into one line and exit code 1 (NEWSLETTER_DEBUG=1 shows the traceback).

    As a LocalGroup it also draws every help of its commands in the newsletter's language.
    """

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except NewsletterError as exc:
            if debugging():
                raise
            error_line(str(exc))
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            if debugging():
                raise
            err.print("\nAbgebrochen. Es wurde nichts halb geschrieben.", soft_wrap=True)
            raise typer.Exit(130) from None
        except usage.UsageError as exc:
            _usage_exit(exc)
        except typer.Abort:  # Ctrl-C or Ctrl-D at a question
            if debugging():
                raise
            err.print("\nAbgebrochen, nichts geändert.", soft_wrap=True)
            raise typer.Exit(1) from None

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        """The top level's own options (`newsletter --bogus`) are parsed before `invoke`."""
        _coerce_plainly(self.get_params(ctx))
        try:
            return super().parse_args(ctx, args)
        except usage.UsageError as exc:
            _usage_exit(exc)

    def resolve_command(self, ctx: Context, args: list[str]) -> tuple[str | None, Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            _coerce_plainly(command.get_params(ctx))  # its --help among them
        return name, command, rest


@dataclass(frozen=True)
class _Plain(RuntimeParam):
    """A text, path, flag, list of texts or own parser's parameter, read as Typer reads it (its
    path checks included); anything unusual (a flag's value from an environment variable) goes
    to Typer after all."""

    def _coerce_value(self, value: Any, param: Any, ctx: Context) -> Any:
        kind, parser = self.annotation, self.parameter_info.parser
        if parser is not None and isinstance(value, str):
            return parser(value)  # ours raise BadParameter in German themselves
        if kind is str and isinstance(value, str):
            return value
        if kind is Path and isinstance(value, str | Path):
            return coerce_cli_path(Path(value), self.parameter_info, path_type=Path, param=param, ctx=ctx)
        if kind is bool and isinstance(value, bool):
            return value
        if kind == list[str] and isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return list(value)
        return build_runtime_param(param.type_descriptor)._coerce_value(value, param, ctx)


def _coerce_plainly(params: list[Parameter]) -> None:
    """Typer (0.29) builds a pydantic TypeAdapter for each parameter of the command it runs:
    importing pydantic and building them is a tenth of a second, a third of `newsletter status`.
    The plain kinds of parameter ours are need none; the others (numbers) stay with Typer."""
    for param in params:
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is None or getattr(param, "_runtime_param", False) is not None:
            continue  # not a Typer parameter, already built, or a Typer that works differently
        info, kind = descriptor.parameter_info, descriptor.annotation
        plain = (kind == list[str] and info.parser is None) if param.multiple else (
            info.parser is not None or kind in (str, Path, bool))
        if plain and param.nargs == 1 and descriptor.file_annotation is None and info.path_type in (None, Path):
            param._runtime_param = _Plain(info, kind)  # type: ignore[attr-defined]


def _usage_exit(exc: usage.UsageError) -> NoReturn:
    if isinstance(exc, getattr(usage, "NoArgsIsHelpError", ())):  # the help, not an error
        raise exc
    path = exc.ctx.command_path if exc.ctx else "newsletter"
    error_line(f"{usage_message(exc)} (Hilfe: {path} --help)")
    raise typer.Exit(exc.exit_code) from None


NO_SUCH_COMMAND = re.compile(r"No such command '(.+?)'\.(?: Did you mean (.+)\?)?")
EXTRA_ARGUMENTS = re.compile(r"Got unexpected extra argument\(s\) \((.*)\)")


def usage_message(exc: usage.UsageError) -> str:
    """Click's usage errors in German, from what the exception knows (its English text otherwise)."""
    if isinstance(exc, usage.NoSuchOption):
        guess = f"; meintest du {' oder '.join(sorted(exc.possibilities))}?" if exc.possibilities else ""
        return f"unbekannte Option {exc.option_name}{guess}"
    if isinstance(exc, usage.BadOptionUsage) and "requires an argument" in exc.message:
        return f"{exc.option_name} braucht einen Wert"
    if isinstance(exc, usage.BadOptionUsage) and "does not take a value" in exc.message:
        return f"{exc.option_name} steht allein, ohne Wert"
    param = getattr(exc, "param", None)
    opts = getattr(param, "opts", None) or []
    if opts[:1] and opts[0].startswith("-"):
        hint = " / ".join(opts)
    else:
        hint = argument_name(param) if isinstance(param, Parameter) else ""
    if isinstance(exc, usage.MissingParameter) and hint:
        return f"es fehlt {hint}"
    if isinstance(exc, usage.BadParameter) and hint:
        choices = getattr(getattr(param, "type_descriptor", None), "choices", None)
        if choices:
            return f"ungültiger Wert für {hint}, möglich: {', '.join(str(c) for c in choices)}"
        if exc.message.startswith("„"):  # our own parsers say it in German, quoting the value first
            return f"ungültiger Wert für {hint}: {exc.message}"
        if isinstance(param, TyperArgument | TyperOption):
            return f"ungültiger Wert für {hint}, erwartet: {expected_value(param)}"
    if match := NO_SUCH_COMMAND.fullmatch(exc.message):
        guess = f"; meintest du {match.group(2).replace(chr(39), '')}?" if match.group(2) else ""
        return f"unbekannter Befehl „{match.group(1)}“{guess}"
    if match := EXTRA_ARGUMENTS.fullmatch(exc.message):
        return f"zu viele Angaben: {match.group(1)} (Text mit Leerzeichen gehört in Anführungszeichen)"
    if exc.message == "Missing command.":
        return "es fehlt ein Befehl"
    return exc.format_message()


app = typer.Typer(
    cls=ErrorBoundary,
    name="newsletter",
    help="Schreiben, prüfen und versenden: dein monatlicher Newsletter aus Markdown.\n\n"
    "Beispiel: [bold]newsletter new \"Innehalten\"[/] und dann "
    "[bold]newsletter preview issues/2026-12-innehalten.md[/]",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

_workspace_option: dict[str, Path | None] = {"path": None}


def _print_version(value: bool) -> None:
    if value:
        out.print(f"newsletter {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def root(
    workspace: Path | None = typer.Option(
        None, "--workspace", "-w", envvar="NEWSLETTER_WORKSPACE",
        help="Ordner des Newsletters (sonst der aktuelle Ordner).", show_default=False,
    ),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Die Version des Programms zeigen und beenden."),
) -> None:
    """Schreiben, prüfen und versenden: dein monatlicher Newsletter aus Markdown."""
    _workspace_option["path"] = workspace


def current_workspace() -> Workspace:
    from newsletter.workspace import find_workspace  # config and templates: not for --help

    return find_workspace(_workspace_option["path"])


def print_json(data: Any) -> None:
    """Machine-readable output for scripts: plain JSON on stdout, no colours."""
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def confirm(question: str, yes: bool) -> bool:
    """Ask before something that mails people; refuse without a terminal unless --yes."""
    if yes:
        return True
    if not _interactive():
        raise NewsletterError(f"{question} Ohne Terminal frage ich nicht: mit --yes bestätigen.")
    while True:
        answer = typer.prompt(f"{question} [j/N]", default="", show_default=False).strip().lower()
        if answer in ("j", "ja", "y", "yes"):
            return True
        if answer in ("", "n", "nein", "no"):
            return False
        err.print("Bitte mit j (ja) oder n (nein) antworten.")


def _interactive() -> bool:
    return sys.stdin.isatty()
