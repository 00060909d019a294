"""What the model learns from a row: answering its question (qa), or writing it (question_generation).

Question generation turns every answerable row around: the model is given the passage and the
answer and writes the question. The turned row keeps QA's shape, so training, `eval`, `predict`
and the server treat it like any other: its `question` slot holds the answer (what the model is
given besides the passage, rendered by the question_generation template), its reference answer
is the original question, and `anchor` remembers where the answer sits in the passage, so a long
passage is cut to a window that holds it (data/features.py), as for QA.
"""

from __future__ import annotations

QA, QUESTION_GENERATION = "qa", "question_generation"


def turned_around(row: dict) -> dict:
    """A QA row as a question-generation row (answerable rows only)."""
    answer, start = row["answers"]["text"][0], row["answers"]["answer_start"][0]
    return {
        **row,
        "question": answer,
        "answers": {"text": [row["question"]], "answer_start": [-1]},
        "anchor": {"text": answer, "start": start},
    }


def rows_for_task(rows: list[dict], task: str) -> list[dict]:
    """The rows as the task reads them; question generation leaves out rows without an answer
    (there is no answer to write a question for)."""
    if task != QUESTION_GENERATION:
        return rows
    return [turned_around(r) for r in rows if r["answers"]["text"]]


def quoted_at(answer: str, passage: str, hint: int | None = None) -> int:
    """Where the answer stands verbatim in the passage: at the hint when it is there (the occurrence
    a question was written about, which may not be the first), else its first occurrence; -1 when
    it is not there."""
    if hint is not None and hint >= 0 and passage[hint : hint + len(answer)] == answer:
        return hint
    return passage.find(answer)


def answer_in_passage(row: dict) -> tuple[str, int] | None:
    """(text, start) of what a training window must hold: the row's answer, or for a turned row
    the answer it writes a question for; None when there is none."""
    if "anchor" in row:
        return row["anchor"]["text"], row["anchor"]["start"]
    texts = row["answers"]["text"]
    return (texts[0], row["answers"]["answer_start"][0]) if texts else None
