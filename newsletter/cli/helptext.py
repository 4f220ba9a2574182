"""The help's own words in the newsletter's language, value types in words, and paragraphs that flow.

Click and Typer write the frame of every `--help` in English: the Click that Typer 0.26+
bundles has "Usage:", "[OPTIONS]", "COMMAND [ARGS]..." and "Show this message and exit."
written out (no gettext), and Typer's panel titles and markers ("Options", "[default: …]",
"[required]") are constants in `typer.rich_utils`, read when a help is drawn. Value types are
Python's names (<str>, <path>, <list[str]>, "<int range> [1<=x<=65535]").

So every command gets a class from here (the group in cli/app.py hands it to all commands):
when a help is drawn, it asks newsletter.toml for the language (German outside a workspace,
as everywhere), sets Typer's constants, and draws the frame, the value types and the names of
arguments in that language. The docstrings' hard line breaks are joined into flowing
paragraphs; a line that starts an example or a list item keeps its own line. Nothing of this
runs unless a help is shown, and `typer.rich_utils` is imported only then, as Typer does.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from rich.errors import StyleSyntaxError
from rich.style import Style
from typer._click import Command
from typer._click.core import Context, Parameter
from typer._click.formatting import HelpFormatter
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

LANGUAGE_KEY = "newsletter.help_language"
WORDS: dict[str, dict[str, str]] = {
    "de": {
        "usage": "Aufruf: ", "options": "[OPTIONEN]", "command": "BEFEHL [ARGUMENTE]...",
        "help": "Diese Hilfe zeigen und beenden.", "text": "Text", "number": "Zahl", "path": "Pfad",
        "file": "Datei", "directory": "Ordner", "date": "Datum", "from": "ab", "to": "bis",
        "DEPRECATED_STRING": "(veraltet) ", "DEFAULT_STRING": "[Standard: {}]",
        "ENVVAR_STRING": "[Umgebungsvariable: {}]", "REQUIRED_LONG_STRING": "[Pflicht]",
        "ARGUMENTS_PANEL_TITLE": "Argumente", "OPTIONS_PANEL_TITLE": "Optionen",
        "COMMANDS_PANEL_TITLE": "Befehle", "ERRORS_PANEL_TITLE": "Fehler", "ABORTED_TEXT": "Abgebrochen.",
        "RICH_HELP": "Hilfe: [blue]{command_path} {help_option}[/]",
    },
    "en": {
        "usage": "Usage: ", "options": "[OPTIONS]", "command": "COMMAND [ARGS]...",
        "help": "Show this help and exit.", "text": "text", "number": "number", "path": "path",
        "file": "file", "directory": "folder", "date": "date", "from": "from", "to": "to",
    },
}
RICH_CONSTANTS = [key for key in WORDS["de"] if key.isupper()]
# Arguments by the name of their parameter: the usage line, the help and the usage errors say these.
ARGUMENT_NAMES: dict[str, dict[str, str]] = {
    "de": {"issue": "AUSGABE", "directory": "ORDNER", "title": "TITEL", "email": "ADRESSE",
           "emails": "ADRESSEN", "file": "DATEI", "files": "DATEIEN"},
    "en": {"emails": "ADDRESSES", "email": "ADDRESS", "files": "FILES"},
}
KEEPS_ITS_LINE = re.compile(r"(?:Beispiel|Example)s?:|[-*•] |\d+\. ")
MARKUP_TAG = re.compile(r"(?<!\\)\[([a-z#/@][^\[\]]*)\]")
_rich_defaults: dict[str, str] = {}


def help_language(ctx: Context) -> str:
    """The language of the help: the workspace's `language`, else German (the default everywhere)."""
    root = ctx.find_root()
    if LANGUAGE_KEY not in root.meta:
        folder = root.params.get("workspace") or os.environ.get("NEWSLETTER_WORKSPACE") or Path.cwd()
        try:
            with (Path(folder).expanduser() / "newsletter.toml").open("rb") as handle:
                language = tomllib.load(handle).get("newsletter", {}).get("language", "de")
        except (OSError, ValueError, AttributeError):  # no workspace, or one that `check` will explain
            language = "de"
        root.meta[LANGUAGE_KEY] = language if isinstance(language, str) and language in WORDS else "de"
    return str(root.meta[LANGUAGE_KEY])


def argument_name(param: Parameter, language: str = "de") -> str:
    """An argument's name in the usage line and in messages: AUSGABE, not issue."""
    name = param.name or ""
    return ARGUMENT_NAMES[language].get(name, name.upper())


def flow(text: str) -> str:
    """Docstring paragraphs as flowing text: single line breaks joined, except before an example or
    a list item; markup-like words such as [web] shown as they are written."""
    paragraphs = []
    for paragraph in text.split("\n\n"):
        lines: list[str] = []
        for line in paragraph.split("\n"):
            line = line.strip()
            if lines and line and not KEEPS_ITS_LINE.match(line):
                lines[-1] = f"{lines[-1]} {line}"
            elif line:
                lines.append(line)
        paragraphs.append("\n".join(lines))
    return MARKUP_TAG.sub(_literal_unless_style, "\n\n".join(paragraphs))


def _literal_unless_style(match: re.Match[str]) -> str:
    tag = match.group(1)
    if tag.startswith("/"):
        return match.group(0)
    try:
        Style.parse(tag.split("=", 1)[0] if tag.startswith("link") else tag)
    except StyleSyntaxError:
        return "\\" + match.group(0)
    return match.group(0)


def value_type(param: TyperArgument | TyperOption, language: str) -> str:
    """What a value is, in words: <Text>, <Zahl 1–65535>, <a|b>; nothing for a flag."""
    words = WORDS[language]
    if isinstance(param, TyperOption):
        if param.is_flag or param.count:
            return ""
        if param.metavar:
            return param.metavar if param.metavar.startswith("<") else f"<{param.metavar}>"
    desc = param.type_descriptor
    if desc.is_choice:
        return "<" + "|".join(str(getattr(c, "value", c)) for c in desc.choices or ()) + ">"
    annotation = desc.annotation
    if desc.is_list:
        annotation = getattr(annotation, "__args__", (str,))[0]
    if desc.is_path:
        label = words.get(desc.path_type, words["path"])
    elif desc.is_datetime:
        label = words["date"]
    elif annotation in (int, float):
        label = words["number"]
        low, high = param.min, param.max
        if low is not None and high is not None:
            label += f" {low}–{high}"
        elif low is not None or high is not None:
            label += f" {words['from']} {low}" if low is not None else f" {words['to']} {high}"
    else:
        label = words["text"]
    return f"<{label}>"


def expected_value(param: TyperArgument | TyperOption) -> str:
    """What a value should be, for a usage error: "eine Zahl von 1 bis 65535"."""
    label = value_type(param, "de").strip("<>")
    if label.startswith("Zahl"):  # "Zahl 1–65535", "Zahl ab 1", "Zahl"
        return "eine " + (re.sub(r"(\S+)–(\S+)", r"von \1 bis \2", label) if "–" in label else label)
    return {"Text": "einen Text", "Pfad": "einen Pfad", "Datei": "eine Datei", "Ordner": "einen Ordner",
            "Datum": "ein Datum"}.get(label, label.replace("|", ", "))


class LocalOption(TyperOption):
    """An option whose value type the help names in the help language."""

    def display_type_rich(self, ctx: Context) -> str | None:
        return value_type(self, help_language(ctx))

    def _get_number_range_help_str(self) -> str | None:
        return None  # the range is part of the value type: <Zahl 1–65535>


class LocalArgument(TyperArgument):
    """An argument named in the help language (AUSGABE); its name and help say what it is."""

    language = "de"  # of the help being drawn (prepare_help); messages are German

    @property
    def display_name_raw(self) -> str:
        return self.metavar or argument_name(self, self.language)

    def display_type_rich(self, ctx: Context) -> str | None:
        return value_type(self, help_language(ctx)) if self.type_descriptor.is_choice else None

    def get_usage_pieces(self, ctx: Context) -> list[str]:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return [name + ("..." if self.nargs != 1 else "")]

    def _get_number_range_help_str(self) -> str | None:
        return None


class Localized(Command):
    """The frame of a command's help in the help language; the commands' own texts flowing."""

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        language = help_language(ctx)
        prepare_help(self, ctx, language)
        super().format_help(ctx, formatter)

    def format_usage(self, ctx: Context, formatter: HelpFormatter) -> None:
        pieces = self.collect_usage_pieces(ctx)
        formatter.write_usage(ctx.command_path, " ".join(pieces), prefix=WORDS[help_language(ctx)]["usage"])

    def collect_usage_pieces(self, ctx: Context) -> list[str]:
        words = WORDS[help_language(ctx)]
        pieces = [words["options"]] if self.options_metavar else []
        for param in self.get_params(ctx):
            pieces.extend(param.get_usage_pieces(ctx))
        if isinstance(self, TyperGroup):
            pieces.append(words["command"])
        return pieces

    def get_help_option(self, ctx: Context) -> TyperOption | None:
        option = super().get_help_option(ctx)
        if option is not None:
            localize_param(option)
            option.help = WORDS[help_language(ctx)]["help"]
        return option


class LocalCommand(Localized, TyperCommand):
    """A command of this CLI (what Typer's @app.command() makes, with the help in its language)."""


class LocalGroup(Localized, TyperGroup):
    """A group of commands whose help, and every command's in it, is drawn in the help language."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for param in self.params:
            localize_param(param)
        for command in self.commands.values():
            localize_command(command)


def localize_command(command: Command) -> None:
    """Give a command Typer built the help of this CLI (groups do this for their own).

    Typer makes every @app.command() a TyperCommand unless each one names a class, and has no
    way at all to choose the class of a parameter; so the group changes the class of what it
    holds, once, instead of every command module having to remember it.
    """
    if type(command) is TyperCommand:
        command.__class__ = LocalCommand
        for param in command.params:
            localize_param(param)


def localize_param(param: Parameter) -> None:
    if type(param) is TyperOption:
        param.__class__ = LocalOption
    elif type(param) is TyperArgument:
        param.__class__ = LocalArgument


def prepare_help(command: Command, ctx: Context, language: str) -> None:
    """Typer's own words in the language, and flowing texts for the command and what it lists."""
    from typer import rich_utils  # what Typer itself imports to draw a help, and only then

    if not _rich_defaults:
        _rich_defaults.update({key: getattr(rich_utils, key) for key in RICH_CONSTANTS})
    for key in RICH_CONSTANTS:
        setattr(rich_utils, key, WORDS[language].get(key, _rich_defaults[key]))
    listed = list(getattr(command, "commands", {}).values())
    for shown in (command, *listed):
        if shown.help:
            shown.help = flow(shown.help)
    for param in command.params:
        if isinstance(param, LocalArgument):
            param.language = language
        if isinstance(param, TyperOption | TyperArgument) and param.help:
            param.help = flow(param.help)
