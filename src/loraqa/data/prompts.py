"""Rows to text: the source a model reads and the target it learns to write."""

from __future__ import annotations

from loraqa.config.templates import resolve_template


def render_source(template: str, row: dict, context: str | None = None) -> str:
    """The model input for a row; `context` replaces the row's passage (e.g. a window of it)."""
    return resolve_template(template).format(
        question=row["question"].strip(),
        context=(row.get("context") or "") if context is None else context,
        title=row.get("title") or "",
    )


def render_target(row: dict, unanswerable_text: str = "unanswerable") -> str:
    """The first reference answer, or the no-answer text for SQuAD v2 unanswerable questions."""
    texts = row["answers"]["text"]
    return texts[0].strip() if texts else unanswerable_text
