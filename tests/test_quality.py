"""The code stays ruff-clean; the README's commands and CI agree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_ruff_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "newsletter", "tests", "benchmarks"],
                            cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_opens_with_the_two_commands_ci_runs() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    block = lines[lines.index("```bash") + 1: lines.index("```bash") + 3]
    assert block[0].endswith("newsletter send issues/2026-12-innehalten.md --yes")
    assert (REPO / "issues" / "2026-12-innehalten.md").is_file()
    assert "pip install '.[test]'" in block[1] and block[1].endswith("python -m pytest")
    assert "pip install '.[test]'" in (REPO / ".ci" / "run").read_text()
