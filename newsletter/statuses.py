"""Where a person on the list stands: light enough for the command line's help to import."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """Where a person stands; the value is what the file says (a StrEnum: equal to that text)."""

    PENDING = "pending"            # signed up or added, not confirmed: never mailed
    ACTIVE = "active"              # confirmed: the only people an issue goes to
    UNSUBSCRIBED = "unsubscribed"  # left: never mailed again
    BOUNCED = "bounced"            # the mailbox does not exist: never mailed again


PENDING, ACTIVE, UNSUBSCRIBED, BOUNCED = Status
STATUSES = tuple(str(status) for status in Status)
STATUS_LABELS: dict[str, str] = {PENDING: "unbestätigt", ACTIVE: "aktiv", UNSUBSCRIBED: "abgemeldet",
                 BOUNCED: "unzustellbar"}
