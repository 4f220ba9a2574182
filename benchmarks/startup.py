"""How long the commands the author types most take to start, beside the floor of any Typer tool.

    python benchmarks/startup.py             # 15 runs each, the median
    python benchmarks/startup.py --runs 31

Side by side, each a fresh process from start to exit, in a copy of the example workspace:

- `newsletter --help`, `newsletter status`, `newsletter subscribers list`;
- the floor: a minimal Typer app with three commands and the same rich help (`rich_markup_mode`),
  and a bare `import typer, rich`.

Target: `newsletter --help` within 1.3× the minimal Typer app. The checkout's package is
byte-compiled first, as `pip install` does (with PYTHONDONTWRITEBYTECODE set, as in this
container, every run would otherwise compile it again). Never run by the tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

MINIMAL = '''
import typer

app = typer.Typer(rich_markup_mode="rich", no_args_is_help=True, add_completion=False)


@app.command()
def one(name: str = typer.Argument(..., help="A name."), flag: bool = typer.Option(False, help="A flag.")) -> None:
    """The first command, with [bold]rich[/] help."""


@app.command()
def two(count: int = typer.Option(1, help="How many.")) -> None:
    """The second command."""


@app.command()
def three() -> None:
    """The third command."""


app()
'''


def median_seconds(argv: list[str], cwd: Path, env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "newsletter")], check=True)
    folder = Path(tempfile.mkdtemp(prefix="newsletter-startup-"))
    try:
        for part in ("newsletter.toml", "issues", "subscribers", "templates"):
            source = REPO / part
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, folder / part)
        (folder / "minimal.py").write_text(MINIMAL)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(folder / "minimal.py")], check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
        env.update(PYTHONPATH=str(REPO), COLUMNS="100")
        ours = [sys.executable, "-m", "newsletter"]
        rows = [
            ("bare `import typer, rich`", [sys.executable, "-c", "import typer, rich"]),
            ("minimal Typer app, 3 commands, --help", [sys.executable, str(folder / "minimal.py"), "--help"]),
            ("newsletter --help", [*ours, "--help"]),
            ("newsletter status", [*ours, "status"]),
            ("newsletter subscribers list", [*ours, "subscribers", "list"]),
        ]
        results = {}
        for _ in range(2):  # warm the file cache, then measure interleaved rounds
            for label, argv in rows:
                results[label] = median_seconds(argv, folder, env, max(1, args.runs // 2))
        print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, median of {args.runs // 2} runs\n")
        print("| command | seconds |")
        print("|---|---:|")
        for label, seconds in results.items():
            print(f"| {label} | {seconds:.3f} |")
        ratio = results["newsletter --help"] / results["minimal Typer app, 3 commands, --help"]
        print(f"\nnewsletter --help / minimal Typer app: {ratio:.2f}× (target ≤ 1.3×: "
              f"{'met' if ratio <= 1.3 else 'MISSED'})")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
