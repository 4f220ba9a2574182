"""SpamAssassin's verdict on what the tool sends: its shipped rules, offline (-L), when it is installed.

`.ci/run` installs Debian's spamassassin; elsewhere the test is skipped. The rules are read
from the shipped folder (-C): an `sa-update` folder that is there but empty would otherwise
hide every rule.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from example_mail import all_mail

SPAMASSASSIN = shutil.which("spamassassin")
SHIPPED_RULES = Path("/usr/share/spamassassin")
# Informational rules about how the test hands the message over (no Received header, no
# relay), not about the message the tool writes.
NOT_OURS = {"NO_RECEIVED", "NO_RELAYS"}
RULE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\s", re.M)

pytestmark = pytest.mark.skipif(SPAMASSASSIN is None,
                                reason="spamassassin fehlt (Debian-Paket, `.ci/run` installiert es)")


def verdicts(messages: dict[str, bytes], home: Path) -> dict[str, tuple[float, dict[str, float]]]:
    """Score and rules per message; the four run side by side, each startup costs seconds."""
    command = [str(SPAMASSASSIN), "-L", "-t"]
    if (SHIPPED_RULES / "10_default_prefs.cf").is_file():
        command += ["-C", str(SHIPPED_RULES)]
    running = {name: subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
               for name in messages}
    found = {}
    for name, process in running.items():
        out, _ = process.communicate(messages[name], timeout=120)
        report = out.decode("utf-8", "replace").split("Content analysis details:", 1)
        assert len(report) == 2, f"{name}: no SpamAssassin report"
        score = float(re.match(r"\s*\((-?\d+(?:\.\d+)?) points", report[1]).group(1))
        found[name] = (score, {rule: float(points) for points, rule in RULE.findall(report[1])})
    return found


def test_spamassassin_finds_nothing_to_object_to(example_workspace: Path, runner, tmp_path: Path) -> None:
    mails = all_mail(example_workspace, runner)
    chosen = {name: data for name, data in mails.items()
              if name in ("confirm", "welcome") or name.endswith(("/test", "/anna.beispiel@example.org.eml"))}
    assert len(chosen) == 4
    for name, (score, rules) in verdicts(chosen, tmp_path).items():
        assert score <= 0.5, (name, score, rules)
        assert {rule: points for rule, points in rules.items() if points > 0.1 and rule not in NOT_OURS} == {}, name
        assert "HTML_MESSAGE" in rules, name  # the HTML part was read, so its rules ran
