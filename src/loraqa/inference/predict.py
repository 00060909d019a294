"""`loraqa predict`: one question, or a JSONL file of them, answered by the Answerer.

A file is read as UTF-8 JSON lines split at "\\n" only: JSON strings may hold U+2028 and U+2029
unescaped, and str.splitlines() would cut a row there. Every row is checked before any model
work (text, types, NaN, a known adapter, an empty document), each problem named by file and
line. Rows are then answered in chunks, each chunk appended to the output as soon as it is
answered, so an interrupted run keeps what it answered and `resume` answers only the rows whose
id is not in the output yet.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loraqa.errors import LoraqaError, UsageError, option
from loraqa.inference.answerer import Answer, Answerer, AnswererOptions
from loraqa.output_files import jsonl_line

if TYPE_CHECKING:  # Unpack is in typing from Python 3.12
    from typing_extensions import Unpack

CHUNK_BATCHES = 4  # rows answered (and written) together: this many generation batches' worth


def predict_one(
    adapters: dict,
    question: str,
    context: str | None = None,
    use: str | None = None,
    collection: str | None = None,
    mode: str | None = None,
    filters: list | None = None,
    **answerer_options: Unpack[AnswererOptions],
) -> tuple[Answer, Answerer]:
    """One question's answer (and the Answerer, whose collections its citations point into).
    mode: how a collection is searched; answerer_options go to Answerer (base_model,
    allow_pickle, engine, collections)."""
    if not question.strip():
        raise UsageError(f"{option('question')} is empty")
    if context is not None and not context.strip():
        raise UsageError(
            f"{option('context')} is empty; pass the passage to read the answer from, or leave {option('context')} out"
        )
    answerer = Answerer(adapters, **answerer_options)
    request = {
        "question": question,
        "context": context,
        "adapter": use,
        "collection": collection,
        "mode": mode,
        "filters": filters,
    }
    return answerer.answer([request])[0], answerer


def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON value")


def _row_problem(row) -> str | None:
    if not isinstance(row, dict):
        return 'is not an object; each line must look like {"question": "...", "context": "..."}'
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        return "has no 'question'" if question is None else "has a 'question' that is not a non-empty string"
    context = row.get("context")
    if context is not None and not isinstance(context, str):
        return "has a 'context' that is not a string"
    if isinstance(context, str) and not context.strip():
        return "has an empty context (only whitespace); send the passage, or leave 'context' out"
    for key in ("adapter", "collection"):
        if row.get(key) is not None and not isinstance(row.get(key), str):
            return f"has an '{key}' that is not a string"
    if "id" in row and (isinstance(row["id"], bool) or not isinstance(row["id"], (str, int))):
        return "has an 'id' that is not a string or an integer"
    return None


def read_questions(path: str, unique_ids: bool = False) -> list[dict]:
    """The file's rows, each checked, with its line number under '_line' and its id under 'id'
    (the row's index when it has none). unique_ids: refuse an id used twice (resume matches
    answers to rows by id)."""
    p = Path(path)
    if not p.is_file():
        raise LoraqaError(f"input file not found: {p}")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        at_line = raw[: exc.start].count(b"\n") + 1
        raise LoraqaError(f"{p} line {at_line} is not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    rows: list[dict] = []
    ids: set[str] = set()
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, parse_constant=_no_constants)
        except json.JSONDecodeError:
            raise LoraqaError(
                f'{p} line {n} is not JSON; each line must be an object like {{"question": "...", "context": "..."}}'
            ) from None
        except (ValueError, RecursionError) as exc:  # NaN / Infinity, or nesting too deep to parse
            why = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
            raise LoraqaError(f"{p} line {n}: {why}") from None
        problem = _row_problem(row)
        if problem:
            raise LoraqaError(f"{p} line {n} {problem}")
        row = row | {"_line": n, "id": row.get("id", len(rows))}
        if unique_ids and row["id"] in ids:
            raise LoraqaError(
                f"{p} line {n} repeats the id {row['id']!r}; resuming matches answers to rows by id, "
                "so ids must be unique"
            )
        ids.add(row["id"])
        rows.append(row)
    if not rows:
        raise LoraqaError(f"{p} holds no questions")
    return rows


def answered_ids(output: Path) -> set:
    """Ids already answered in an earlier run's output; a last line cut short is removed."""
    if not output.is_file():
        return set()
    data = output.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with open(output, "r+b") as fh:  # the line a killed run was writing
            fh.truncate(len(complete))
    ids = set()
    for n, line in enumerate(complete.decode("utf-8", errors="replace").split("\n"), 1):
        if line.strip():
            try:
                ids.add(json.loads(line)["id"])
            except (ValueError, KeyError, TypeError):
                raise LoraqaError(
                    f"{output} line {n} is not an answer row written by loraqa; resume needs the "
                    "output of an earlier `loraqa predict` run"
                ) from None
    return ids


@dataclass
class PredictResult:
    written: int
    skipped: int  # already in the output (resume)


def predict_file(
    adapters: dict,
    input_path: str,
    output_path: str,
    batch_size: int = 16,
    resume: bool = False,
    progress: Callable[[int, int], None] | None = None,
    **answerer_options: Unpack[AnswererOptions],
) -> PredictResult:
    """Answer every row; each output row carries the answer's evidence (score, no_answer, start,
    end, windows, and citations for a row answered from a collection) and names the adapter that
    answered. progress(done, total) after each chunk of questions written. answerer_options go to
    Answerer (base_model, allow_pickle, engine, collections)."""
    rows = read_questions(input_path, unique_ids=resume)
    output = Path(output_path)
    done = answered_ids(output) if resume else set()
    todo = [r for r in rows if r["id"] not in done]
    answerer = Answerer(adapters, **answerer_options)
    for row in todo:  # unknown adapters refused before any model work, naming the line
        try:
            answerer.registry.choose(row.get("adapter"), row["question"], row.get("context"))
            if row.get("collection"):
                answerer.library.open(row["collection"])
        except LoraqaError as exc:
            raise LoraqaError(f"{input_path} line {row['_line']}: {exc.template}") from None
    output.parent.mkdir(parents=True, exist_ok=True)
    chunk = batch_size * CHUNK_BATCHES
    with open(output, "a" if resume else "w", encoding="utf-8") as out:
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            readings: list = []
            cache: dict = {}
            for row in part:
                try:
                    readings.append(
                        answerer.plan(
                            {
                                "question": row["question"],
                                "context": row.get("context"),
                                "adapter": row.get("adapter"),
                                "collection": row.get("collection"),
                            },
                            cache,
                        )
                    )
                except LoraqaError as exc:
                    raise LoraqaError(f"{input_path} line {row['_line']}: {exc.template}") from None
            for row, answer in zip(part, answerer.read(readings, batch_size=batch_size)):
                out.write(jsonl_line({"id": row["id"], "question": row["question"], **answer.as_dict()}))
            out.flush()
            if progress is not None:
                progress(start + len(part), len(todo))
    return PredictResult(len(todo), len(rows) - len(todo))
