"""`loraqa score DATA PREDICTIONS`: the official SQuAD evaluation on any predictions file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from loraqa.errors import LoraqaError
from loraqa.metrics import score_one, squad_summary


@dataclass
class ScoreResult:
    version: str
    summary: dict
    missing: list = field(default_factory=list)  # questions with no prediction (scored as wrong)
    unknown: list = field(default_factory=list)  # prediction ids not in the data (ignored)


def _read_json(path: Path, what: str):
    if not path.is_file():
        raise LoraqaError(f"{what} file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LoraqaError(f"{what} file {path} is not valid JSON (line {exc.lineno}, column {exc.colno}); "
                          "fix or regenerate it") from None
    except UnicodeDecodeError:
        raise LoraqaError(f"{what} file {path} is not UTF-8 text") from None


def read_official(path: str | Path) -> tuple[list[dict], str]:
    """Questions of an official-format SQuAD file, and its version ('v1' or 'v2')."""
    path = Path(path)
    data = _read_json(path, "data")
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise LoraqaError(f"{path} is not an official-format SQuAD file ({{'version': ..., 'data': [articles]}})")
    questions = []
    v2 = str(data.get("version", "")).lstrip("v").startswith("2")
    for article in data["data"]:
        for para in article.get("paragraphs", []):
            for qa in para.get("qas", []):
                v2 = v2 or "is_impossible" in qa
                questions.append({"id": qa["id"], "answers": [a["text"] for a in qa.get("answers", [])],
                                  "context": para.get("context", "")})
    if not questions:
        raise LoraqaError(f"{path} holds no questions")
    return questions, "v2" if v2 else "v1"


def read_predictions(path: str | Path) -> dict[str, str]:
    path = Path(path)
    preds = _read_json(path, "predictions")
    if not isinstance(preds, dict) or not all(isinstance(v, str) for v in preds.values()):
        raise LoraqaError(f"predictions file {path} must be a JSON object {{\"question id\": \"answer text\"}}")
    return preds


def score(questions: list[dict], predictions: dict[str, str], version: str) -> ScoreResult:
    items, missing = [], []
    known = set()
    for q in questions:
        known.add(q["id"])
        if q["id"] not in predictions:
            missing.append(q["id"])
            items.append({"em": 0.0, "f1": 0.0, "has_answer": bool(q["answers"])})
            continue
        em, f1 = score_one(predictions[q["id"]], q["answers"], version)
        items.append({"em": em, "f1": f1, "has_answer": bool(q["answers"])})
    unknown = [k for k in predictions if k not in known]
    return ScoreResult(version, squad_summary(items, version), missing, unknown)


def score_files(data_path: str | Path, predictions_path: str | Path) -> ScoreResult:
    questions, version = read_official(data_path)
    return score(questions, read_predictions(predictions_path), version)
