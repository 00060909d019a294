"""`loraqa review export` and `loraqa review import`: question-answer pairs out to Label Studio
for a person to check, and the checked pairs back as training data.

Export takes loraqa's data format (what `loraqa synth` writes, or any data file) or a
predictions file of `loraqa predict` with the questions file it answered (for the passages);
`--least-confident N` sends only the N pairs the model is least sure of (the lowest round-trip F1,
or the lowest answer probability). Import reads Label Studio's JSON export: corrected spans are
kept (their offsets checked against the passage), rejected and skipped pairs dropped, a
rewritten question replaces the old one, "No answer in passage" makes an unanswerable row.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from loraqa.data.loading import normalise_row, raw_rows
from loraqa.documents.names import without_surrogates
from loraqa.errors import LoraqaError, UsageError
from loraqa.output_files import jsonl_line, write_atomic, write_json
from loraqa.review.label_studio import (
    LABEL_CONFIG,
    NO_ANSWER,
    REJECT,
    VERDICT,
    BadTask,
    Review,
    latest_review,
    task,
)
from loraqa.synth.checks import locate, locate_span

SKIPPED, UNREVIEWED, REJECTED, NO_SPAN, SPAN_NOT_IN_PASSAGE, NO_PASSAGE = (
    "skipped",
    "unreviewed",
    "rejected",
    "no_answer_marked",
    "span_not_in_passage",
    "no_passage",
)
# columns that are the pair itself; every other column of a row travels as provenance
PAIR_COLUMNS = ("context", "question", "answers", "answer")


@dataclass
class ExportReport:
    tasks: int = 0
    config: str = ""  # where the labelling config was written
    skipped: dict = field(default_factory=dict)  # reason -> rows not exported


@dataclass
class ImportReport:
    tasks: int = 0
    kept: int = 0
    corrected: int = 0  # answers the reviewer changed
    rewritten: int = 0  # questions the reviewer changed
    unanswerable: int = 0
    dropped: dict = field(default_factory=dict)
    bad: list = field(default_factory=list)  # one line per task not in Label Studio's format (left out)


def config_path(output: Path) -> Path:
    return output.with_suffix(".label_config.xml")


def export_tasks(
    source: str, output: str, questions: str | None = None, least_confident: int | None = None
) -> ExportReport:
    """Write Label Studio tasks to OUTPUT (JSON) and the labelling config beside it."""
    rows = raw_rows(Path(source))
    skipped: Counter = Counter()
    if rows and _is_predictions(rows[0]):
        if not questions:
            raise UsageError(
                f"{source} holds predictions: give --questions, the file they answered (its "
                "passages go to the reviewer)"
            )
        scored = _prediction_tasks(rows, raw_rows(Path(questions)), skipped, source)
    else:
        if questions:
            raise UsageError("--questions goes with a predictions file; a data file carries its passages")
        scored = _data_tasks(rows, source, skipped)
    if least_confident is not None:
        scored.sort(key=lambda ct: (ct[0] is None, ct[0] if ct[0] is not None else 0.0))
        scored = scored[:least_confident]
    if not scored:
        raise LoraqaError(f"{source} has no pair with a passage to review")
    out = Path(output)
    write_json(out, [t for _, t in scored])
    write_atomic(config_path(out), LABEL_CONFIG)
    return ExportReport(len(scored), str(config_path(out)), dict(skipped))


def _is_predictions(row) -> bool:
    return isinstance(row, dict) and "no_answer" in row and "adapter" in row and "context" not in row


def _provenance(raw: dict) -> dict:
    return {k: v for k, v in raw.items() if k not in PAIR_COLUMNS}


def _data_tasks(rows: list, source: str, skipped: Counter) -> list[tuple[float | None, dict]]:
    out = []
    for i, raw in enumerate(rows):
        row = normalise_row(raw, i, source)
        if not row["context"]:
            skipped[NO_PASSAGE] += 1
            continue
        texts, starts = row["answers"]["text"], row["answers"]["answer_start"]
        span = None
        if texts:
            at = locate(
                texts[0], row["context"], starts[0] if starts and starts[0] is not None and starts[0] >= 0 else None
            )
            span = None if at is None else (at, at + len(texts[0].strip()))
        prov = {**_provenance(raw), "id": row["id"]}
        confidence = raw.get("roundtrip_f1") if isinstance(raw.get("roundtrip_f1"), (int, float)) else None
        t = task(row["context"], row["question"], prov, span, str(raw.get("generator") or "data"), confidence)
        if not texts:
            t["predictions"][0]["result"].append(_verdict(NO_ANSWER))
        out.append((confidence, t))
    return out


def _prediction_tasks(
    predictions: list, question_rows: list, skipped: Counter, source: str
) -> list[tuple[float | None, dict]]:
    by_id = {str(q.get("id")): q for q in question_rows if isinstance(q, dict) and q.get("id") is not None}
    out = []
    for p in predictions:
        q = by_id.get(str(p.get("id")))
        passage = q.get("context") if q else None
        if q is None or not isinstance(passage, str) or not passage.strip():
            skipped[NO_PASSAGE] += 1  # unknown id, or answered from a collection (no passage given)
            continue
        answer = p.get("answer") or ""
        span = None
        if answer and not p.get("no_answer"):
            at = (
                p["start"]
                if isinstance(p.get("start"), int) and passage[p["start"] : p.get("end") or 0] == answer
                else locate(answer, passage)
            )
            span = None if at is None else (at, at + len(answer.strip()))
        score = p.get("score")
        confidence = math.exp(score) if isinstance(score, (int, float)) else None
        prov = {**_provenance(q), "id": str(q["id"]), "predicted_by": p.get("adapter"), "score": score}
        t = task(passage, q.get("question", p.get("question", "")), prov, span, str(p.get("adapter")), confidence)
        if p.get("no_answer"):
            t["predictions"][0]["result"].append(_verdict(NO_ANSWER))
        out.append((confidence, t))
    return out


def _verdict(choice: str) -> dict:
    return {
        "id": "verdict-0",
        "from_name": VERDICT,
        "to_name": "text",
        "type": "choices",
        "value": {"choices": [choice]},
    }


def import_reviews(export: str, output: str, keep_unreviewed: bool = False) -> ImportReport:
    """Training rows (loraqa's data format, JSONL) from a Label Studio JSON export. A task in a
    shape Label Studio does not write is one line in report.bad and is left out."""
    tasks = _read_export(export)
    report, rows = ImportReport(tasks=len(tasks)), []
    dropped: Counter[str] = Counter()
    for n, t in enumerate(tasks, 1):
        data = t["data"]
        passage, question = data.get("text"), data.get("question")
        if not isinstance(passage, str) or not isinstance(question, str):
            raise LoraqaError(
                f"{export}: task {_task_id(t, n)} has no text and question in its data: was it exported "
                "from a project made with `loraqa review export`?"
            )
        try:
            row = _import_task(t, passage, question, keep_unreviewed, dropped)
        except BadTask as exc:
            report.bad.append(f"{export}: task {_task_id(t, n)}: {exc}; left out")
            continue
        if row is None:
            continue
        review_question, reviewed = row.pop("_review_question"), row.pop("_reviewed")
        report.rewritten += review_question is not None and review_question != question
        report.unanswerable += not row["answers"]["text"]
        report.corrected += reviewed and row["answers"]["text"] != _predicted_texts(t)
        rows.append(row)
    report.kept, report.dropped = len(rows), dict(dropped)
    write_atomic(Path(output), "".join(jsonl_line(r) for r in rows))
    return report


def _task_id(t: dict, n: int) -> str:
    given = t.get("id")
    return str(given)[:40] if isinstance(given, (int, str)) and not isinstance(given, bool) else f"#{n}"


def _import_task(t: dict, passage: str, question: str, keep_unreviewed: bool, dropped: Counter) -> dict | None:
    review = latest_review(t, passage)
    reviewed = review is not None
    if review is None:
        if not keep_unreviewed:
            dropped[UNREVIEWED] += 1
            return None
        predictions = t.get("predictions") or [{}]
        if not isinstance(predictions, list) or not isinstance(predictions[-1], dict):
            raise BadTask("its 'predictions' is not a list of predictions")
        review = _as_review(predictions[-1], passage)
    if not isinstance(review, Review):  # SKIPPED: every annotation was cancelled
        dropped[SKIPPED] += 1
        return None
    if review.verdict == REJECT:
        dropped[REJECTED] += 1
        return None
    row = _row(t, passage, review.question or question, review, reviewed)
    if row is None:
        dropped[SPAN_NOT_IN_PASSAGE if review.spans else NO_SPAN] += 1
        return None
    return {**row, "_review_question": review.question, "_reviewed": reviewed}


def _read_export(path: str) -> list[dict]:
    try:
        data = without_surrogates(json.loads(Path(path).read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise UsageError(f"file not found: {path}") from None
    except RecursionError:
        raise LoraqaError(f"{path} is not a Label Studio JSON export (its JSON nests too deeply)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LoraqaError(
            f"{path} is not a Label Studio JSON export ({str(exc).splitlines()[0][:120]}); export the project as JSON"
        ) from None
    if not isinstance(data, list) or not all(isinstance(t, dict) for t in data):
        raise LoraqaError(f"{path} is not a Label Studio JSON export (a list of tasks); export the project as JSON")
    if data and not all(isinstance(t.get("data"), dict) for t in data):
        raise LoraqaError(
            f"{path} looks like Label Studio's JSON-MIN or CSV export, which drops the passages' "
            "provenance; export the project as JSON"
        )
    return data


def _as_review(prediction: dict, passage: str | None = None) -> Review:
    """A prediction taken as the review (for --keep-unreviewed)."""
    found = latest_review({"annotations": [{"result": prediction.get("result") or []}]}, passage)
    return found if isinstance(found, Review) else Review()


def _predicted_texts(t: dict) -> list[str]:
    predictions = t.get("predictions") or [{}]
    if not isinstance(predictions, list) or not isinstance(predictions[-1], dict):
        return []
    try:
        review = _as_review(predictions[-1])
    except BadTask:
        return []
    return [text.strip() for _, text in review.spans] if review.verdict != NO_ANSWER else []


def _row(t: dict, passage: str, question: str, review: Review, reviewed: bool) -> dict | None:
    """The training row, or None when the answer is neither a span of the passage nor 'no answer'."""
    texts, starts = [], []
    if review.verdict != NO_ANSWER:
        if not review.spans:
            return None
        for start, text in review.spans:
            span = locate_span(text, passage, start)
            if span is None:
                return None
            texts.append(passage[span[0] : span[1]])
            starts.append(span[0])
    prov = t["data"].get("loraqa")
    prov = dict(prov) if isinstance(prov, dict) else {}
    row = {
        **prov,
        "id": str(prov.get("id") or f"label-studio-{t.get('id')}"),
        "context": passage,
        "question": question,
        "answers": {"text": texts, "answer_start": starts},
        "reviewed": reviewed,
    }
    if question != t["data"]["question"]:
        row["original_question"] = t["data"]["question"]
    annotator = review.reviewer
    if annotator is not None:
        row["reviewer"] = annotator
    return row
