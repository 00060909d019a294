"""The calibration file beside an adapter: the no-answer threshold `loraqa eval` calibrated on
held-out questions, read by every later use of the adapter."""

from __future__ import annotations

import json
import math
from pathlib import Path

from loraqa.errors import LoraqaError
from loraqa.output_files import write_json

CALIBRATION_NAME = "loraqa_calibration.json"


def read_calibration(adapter_dir: Path) -> dict | None:
    """The calibration `loraqa eval` saved, checked: its threshold is a finite number or null."""
    path = Path(adapter_dir) / CALIBRATION_NAME
    if not path.exists():
        return None
    damaged = LoraqaError(f"{path} is damaged; delete it and run `loraqa eval` again to recalibrate")
    if not path.is_file():  # a FIFO or device would block or never end
        raise damaged
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise damaged from None
    threshold = data.get("no_answer_threshold") if isinstance(data, dict) else "missing"
    if threshold is not None and not (
        isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and math.isfinite(threshold)
    ):
        raise damaged
    return data


def write_calibration(adapter_dir: Path, calibration: dict) -> None:
    write_json(Path(adapter_dir) / CALIBRATION_NAME, calibration)
