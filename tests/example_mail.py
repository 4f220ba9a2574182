"""Every message the example workspace sends, for the tests that judge them as a whole."""

from __future__ import annotations

from pathlib import Path

from conftest import invoke

from newsletter.changes import CONFIRM_MAIL, WELCOME_MAIL
from newsletter.mails import build_mail
from newsletter.workspace import Workspace


def all_mail(root: Path, runner) -> dict[str, bytes]:
    """Every message the example workspace produces: each issue to everyone, a test copy, the two single mails."""
    ws = Workspace(root)
    found: dict[str, bytes] = {}
    for path in sorted(ws.issues_dir.glob("*.md")):
        assert invoke(runner, "--workspace", str(root), "send", str(path), "--yes").exit_code == 0
        assert invoke(runner, "--workspace", str(root), "send", str(path), "--test", "mira@example.org").exit_code == 0
        for eml in sorted((ws.outbox_dir / path.stem).glob("*.eml")):
            found[f"{path.stem}/{eml.name}"] = eml.read_bytes()
        found[f"{path.stem}/test"] = (ws.outbox_dir / "test" / "mira@example.org.eml").read_bytes()
    base = ws.config.base_url
    found["confirm"] = build_mail(ws, CONFIRM_MAIL, "anna@example.org",
                                  {"confirm_url": f"{base}/c/{'x' * 60}", "confirm_days": 7}).data
    leave = f"{base}/u/{'y' * 40}"
    found["welcome"] = build_mail(ws, WELCOME_MAIL, "anna@example.org", {"unsubscribe_url": leave},
                                  unsubscribe_url=leave).data
    return found
