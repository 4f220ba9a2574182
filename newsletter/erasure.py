"""Erasure beyond the subscriber file: send journals and outbox copies (GDPR Art. 17).

`SubscriberStore.forget` removes the person from the list; what a send left behind about
them goes here. Journal rows stay (so a resumed send still knows the row is done and skips
it) but lose the address and name; outbox messages addressed to the person are deleted, and
so is what the change log still holds about them (a mail `serve` has not sent yet).
"""

from __future__ import annotations

from pathlib import Path

from newsletter.changes import ChangeLog
from newsletter.headers import ascii_address
from newsletter.journal import SendJournal, journals
from newsletter.transport import outbox_name


def erase_traces(state_dir: Path, email: str) -> tuple[int, int]:
    """Scrub `email` from every send journal and outbox; returns (journal rows, files)."""
    rows = 0
    for path in journals(state_dir / "journal"):
        with SendJournal(path) as journal:
            rows += journal.erase(email)
    ChangeLog(state_dir / "changes.sqlite").erase(email)
    files = 0
    names = {name.lower() for name in (outbox_name(email), outbox_name(ascii_address(email)))}
    outbox = state_dir / "outbox"
    for path in sorted(outbox.rglob("*.eml")) if outbox.is_dir() else []:
        if path.name.lower() in names:
            path.unlink()
            files += 1
    return rows, files
