"""Erasure beyond the subscriber file: send journals and outbox copies (GDPR Art. 17).

`SubscriberStore.forget` removes the person from the list; what a send left behind about
them goes here. Journal rows stay (so a resumed send still knows the row is done and skips
it) but lose the address and name; outbox messages addressed to the person are deleted.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from newsletter.journal import ERASED
from newsletter.message import ascii_address
from newsletter.transport import outbox_name


def erase_traces(state_dir: Path, email: str) -> tuple[int, int]:
    """Scrub `email` from every send journal and outbox; returns (journal rows, files)."""
    rows = 0
    for path in sorted((state_dir / "journal").glob("*.sqlite")):
        db = sqlite3.connect(path, timeout=30)
        try:
            db.execute("PRAGMA secure_delete = ON")  # overwrite the old bytes, not just unlink them
            with db:
                # Rows not yet sent become `skipped`: an erased person is never mailed.
                rows += db.execute(
                    "UPDATE recipients SET email = ?, name = '', last_reply = NULL,"
                    " state = CASE WHEN state IN ('pending', 'reserved', 'deferred') THEN 'skipped' ELSE state END"
                    " WHERE lower(email) = lower(?)", (ERASED, email)).rowcount
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # and no copy left in the write-ahead log
        finally:
            db.close()
    files = 0
    names = {outbox_name(email), outbox_name(ascii_address(email))}
    outbox = state_dir / "outbox"
    for path in sorted(outbox.rglob("*.eml")) if outbox.is_dir() else []:
        if path.name in names or path.name.lower() in {name.lower() for name in names}:
            path.unlink()
            files += 1
    return rows, files
