"""`loraqa predict`: one question, or a JSONL file of them, answered by the Answerer."""

from __future__ import annotations

import json
from pathlib import Path

from rich.progress import Progress

from loraqa.artifacts import write_atomic
from loraqa.errors import LoraqaError, UsageError
from loraqa.inference.answerer import Answerer


def predict_one(adapters: dict, question: str, context: str | None, base_model: str | None,
                allow_pickle: bool = False) -> str:
    if not question.strip():
        raise UsageError("--question is empty")
    answerer = Answerer(adapters, base_model=base_model, allow_pickle=allow_pickle)
    return answerer.answer([{"question": question, "context": context}])[0]


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
        rows.append(row)
    if not rows:
        raise LoraqaError(f"{p} holds no questions")
    return rows


def predict_file(adapters: dict, input_path: str, output_path: str, base_model: str | None, batch_size: int,
                 allow_pickle: bool = False) -> int:
    rows = read_questions(input_path)
    answerer = Answerer(adapters, base_model=base_model, allow_pickle=allow_pickle)
    requests = [{"question": r["question"], "context": r.get("context"), "adapter": r.get("adapter")} for r in rows]
    with Progress(transient=True) as bar:
        task = bar.add_task("answering", total=len(rows))
        answers = answerer.answer(requests, batch_size=batch_size, progress=lambda n: bar.advance(task, n))
    lines = []
    for i, (row, answer) in enumerate(zip(rows, answers)):
        lines.append(json.dumps({"id": row.get("id", i), "question": row["question"], "answer": answer,
                                 "adapter": row.get("adapter") or answerer.default_adapter()}, ensure_ascii=False))
    write_atomic(Path(output_path), "\n".join(lines) + "\n")
    return len(lines)
