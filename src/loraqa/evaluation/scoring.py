"""Scoring answers: rows answered by loraqa, or any predictions file against an official SQuAD file
(`loraqa score`), exactly as the official evaluation scripts do. Pure Python: no torch, no model."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from loraqa.data.squad_format import is_official, official_rows, official_version
from loraqa.errors import LoraqaError
from loraqa.evaluation.calibration import best_thresholds
from loraqa.evaluation.metrics import extractiveness, rouge_l, score_one, squad_summary


def score_rows(rows: list[dict], predictions: list[str]) -> tuple[list[dict], dict]:
    """Per-question items and the official summary for loraqa's own rows and answers."""
    version = "v2" if any(not r["answers"]["text"] for r in rows) else "v1"
    items = []
    for row, pred in zip(rows, predictions):
        refs = row["answers"]["text"]
        em, f1 = score_one(pred, refs, version)
        items.append(
            {
                "id": row["id"],
                "question": row["question"],
                "prediction": pred,
                "references": refs,
                "em": em,
                "f1": round(f1, 6),
                "rouge_l": round(rouge_l(pred, refs), 6),
                "has_answer": bool(refs),
            }
        )
    summary = squad_summary(items, version)
    if "exact" in summary:
        summary = {"exact_match": summary["exact"], **summary}
    summary.setdefault("total", len(items))
    summary["version"] = version
    summary["extractiveness"] = extractiveness(predictions, [r["context"] for r in rows])
    return items, summary


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
        raise LoraqaError(
            f"{what} file {path} is not valid JSON (line {exc.lineno}, column {exc.colno}); fix or regenerate it"
        ) from None
    except UnicodeDecodeError:
        raise LoraqaError(f"{what} file {path} is not UTF-8 text") from None


def read_official(path: str | Path) -> tuple[list[dict], str]:
    """Questions of an official-format SQuAD file, and its version ('v1' or 'v2')."""
    path = Path(path)
    data = _read_json(path, "data")
    if not is_official(data):
        raise LoraqaError(f"{path} is not an official-format SQuAD file ({{'version': ..., 'data': [articles]}})")
    questions = [
        {"id": r["id"], "answers": r["answers"]["text"], "context": r["context"]}
        for r in official_rows(data, impossible_means_no_answer=False)
    ]
    if not questions:
        raise LoraqaError(f"{path} holds no questions")
    return questions, official_version(data)


def read_predictions(path: str | Path) -> dict[str, str]:
    path = Path(path)
    preds = _read_json(path, "predictions")
    if not isinstance(preds, dict) or not all(isinstance(v, str) for v in preds.values()):
        raise LoraqaError(f'predictions file {path} must be a JSON object {{"question id": "answer text"}}')
    return preds


def read_na_probs(path: str | Path) -> dict[str, float]:
    path = Path(path)
    probs = _read_json(path, "no-answer probability")
    if not isinstance(probs, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in probs.values()
    ):
        raise LoraqaError(f'no-answer probability file {path} must be a JSON object {{"question id": number}}')
    return {k: float(v) for k, v in probs.items()}


def score(
    questions: list[dict],
    predictions: dict[str, str],
    version: str,
    na_probs: dict[str, float] | None = None,
    similarity=None,
) -> ScoreResult:
    """The official summary; with no-answer probabilities also the v2.0 script's best_exact,
    best_exact_thresh, best_f1 and best_f1_thresh; with an AnswerSimilarity also `sas`."""
    items, missing = [], []
    exact, f1s, has_answer = {}, {}, {}
    for q in questions:
        has_answer[q["id"]] = bool(q["answers"])
        if q["id"] not in predictions:
            missing.append(q["id"])
            items.append(
                {
                    "em": 0.0,
                    "f1": 0.0,
                    "rouge_l": 0.0,
                    "has_answer": bool(q["answers"]),
                    "prediction": None,
                    "references": q["answers"],
                }
            )
            continue
        em, f1 = score_one(predictions[q["id"]], q["answers"], version)
        exact[q["id"]], f1s[q["id"]] = em, f1
        items.append(
            {
                "em": em,
                "f1": f1,
                "rouge_l": rouge_l(predictions[q["id"]], q["answers"]),
                "has_answer": bool(q["answers"]),
                "prediction": predictions[q["id"]],
                "references": q["answers"],
            }
        )
    unknown = [k for k in predictions if k not in has_answer]
    summary = squad_summary(items, version)
    if similarity is not None:  # a missing prediction scores 0, as for the other metrics
        from loraqa.evaluation.similarity import add_similarity  # sentence-transformers only when asked

        answered = [i for i in items if i["prediction"] is not None]
        add_similarity(answered, summary, similarity)
        summary["sas"] *= len(answered) / max(len(items), 1)
    if na_probs is not None:
        absent = [q["id"] for q in questions if q["id"] in predictions and q["id"] not in na_probs]
        if absent:
            raise LoraqaError(
                f"{len(absent)} predicted question(s) have no no-answer probability "
                f"(first: {absent[0]}); give one for every prediction"
            )
        summary.update(best_thresholds(predictions, exact, f1s, na_probs, has_answer))
    return ScoreResult(version, summary, missing, unknown)


def score_files(
    data_path: str | Path,
    predictions_path: str | Path,
    na_prob_path: str | Path | None = None,
    similarity_model: str | None = None,
) -> ScoreResult:
    """SQuAD's official scores of a predictions file, by the official scripts' rules.

    Args:
        data_path: The questions with their answers (SQuAD v1.1 or v2.0 JSON).
        predictions_path: `{question id: answer text}` JSON, as the official scripts read it.
        na_prob_path: v2.0's no-answer probabilities (`{id: probability}`), for the best thresholds.
        similarity_model: A sentence-transformers model for semantic answer similarity too.

    Returns:
        Exact match and F1 (overall, and for answerable and unanswerable questions with v2.0).

    Raises:
        LoraqaError: A file missing or not in the format named.
    """
    questions, version = read_official(data_path)
    na_probs = read_na_probs(na_prob_path) if na_prob_path else None
    predictions = read_predictions(predictions_path)
    similarity = None
    if similarity_model is not None:  # imported only then: scoring otherwise needs no model at all
        from loraqa.evaluation.similarity import AnswerSimilarity  # sentence-transformers only when asked

        similarity = AnswerSimilarity(similarity_model)
    return score(questions, predictions, version, na_probs, similarity)
