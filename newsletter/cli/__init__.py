"""The command line: thin commands over the library, one module per area."""

from newsletter.cli import archive, issues, send, subscribers, web  # noqa: F401 - registers the commands
from newsletter.cli.app import app


def main() -> None:
    app()
