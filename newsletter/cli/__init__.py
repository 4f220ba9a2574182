"""The command line: thin commands over the library, one module per area."""

import gc

from newsletter.cli import archive, doctor, inbox, issues, send, subscribers, web  # noqa: F401 - registers the commands
from newsletter.cli.app import app


def main() -> None:
    # What the imports built lives as long as the process: keep the garbage collector from
    # walking it again and again, and at exit (about a tenth of a second per command).
    gc.freeze()
    app()
