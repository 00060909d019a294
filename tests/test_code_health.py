"""The package's lint: what a change that breaks it would let through is an unused import that
hides a missing one, a bare `except` that swallows a user's Ctrl-C, a mutable default shared
between calls. The rules and each exception to them are in pyproject.toml ([tool.ruff])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_ruff_finds_nothing_in_the_package():
    res = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", "src"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_package_is_formatted():
    """Code laid out by one formatter: a change's diff shows what it changes, not whose editor it came from."""
    res = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "src", "tests", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_noqa_in_the_package_says_why():
    """A `# noqa` without its reason is a rule switched off with nobody knowing what it protects."""
    bare = []
    for path in (ROOT / "src").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "# noqa" in line and " - " not in line.split("# noqa", 1)[1]:
                bare.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bare, "\n".join(bare)
