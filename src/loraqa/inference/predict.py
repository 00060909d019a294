"""`loraqa predict`: one question, or a JSONL file of them, answered by the Answerer."""

from __future__ import annotations

import json
from pathlib import Path

from rich.progress import Progress

from loraqa.artifacts import write_atomic
from loraqa.errors import LoraqaError, UsageError
from loraqa.inference.answerer import Answer, Answerer


def predict_one(adapters: dict, question: str, context: str | None, base_model: str | None,
                allow_pickle: bool = False, use: str | None = None, engine: str = "pytorch") -> Answer:
    if not question.strip():
        raise UsageError("--question is empty")
    if context is not None and not context.strip():
        raise UsageError("--context is empty; pass the passage to read the answer from, or leave --context out")
    answerer = Answerer(adapters, base_model=base_model, allow_pickle=allow_pickle, engine=engine)
    return answerer.answer([{"question": question, "context": context, "adapter": use}])[0]


def read_questions(path: str) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise LoraqaError(f"input file not found: {p}")
    rows = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise LoraqaError(f"{p} line {n} is not JSON; each line must be an object like "
                              '{"question": "...", "context": "..."}') from None
        if not isinstance(row, dict) or not str(row.get("question") or "").strip():
            raise LoraqaError(f"{p} line {n} has no 'question'")
        rows.append(row | {"_line": n})
    if not rows:
        raise LoraqaError(f"{p} holds no questions")
    return rows


def predict_file(adapters: dict, input_path: str, output_path: str, base_model: str | None, batch_size: int,
                 allow_pickle: bool = False, engine: str = "pytorch") -> int:
    """Answer every row; each output row carries the answer's evidence (score, no_answer, start,
    end, windows) and names the adapter that answered."""
    rows = read_questions(input_path)
    answerer = Answerer(adapters, base_model=base_model, allow_pickle=allow_pickle, engine=engine)
    readings = []
    for row in rows:  # every row checked before any model work, errors name the line
        try:
            readings.append(answerer.plan({"question": row["question"], "context": row.get("context"),
                                           "adapter": row.get("adapter")}))
        except LoraqaError as exc:
            raise LoraqaError(f"{input_path} line {row['_line']}: {exc}") from None
    with Progress(transient=True) as bar:
        task = bar.add_task("answering (windows)", total=None)
        answers = answerer.read(readings, batch_size=batch_size,
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    lines = [json.dumps({"id": row.get("id", i), "question": row["question"], **answer.as_dict()}, ensure_ascii=False)
             for i, (row, answer) in enumerate(zip(rows, answers))]
    write_atomic(Path(output_path), "\n".join(lines) + "\n")
    return len(lines)
