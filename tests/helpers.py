"""Small helpers shared by the training tests."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from loraqa.cli import app

FAST = ["--set", "track.report_to=none", "--set", "train.logging_steps=2"]


def run_cli(*args: str):
    """Run `loraqa ARGS` in-process; returns the click Result (exit_code, output, stderr)."""
    return CliRunner().invoke(app, list(args), catch_exceptions=True)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
