"""Rows to text: the source a model reads and the target it learns to write.

Named templates exist so a run's config.yaml says which prompt an adapter was trained with
and every later use (eval, predict, serve) renders questions the same way.
"""

from __future__ import annotations

import string

TEMPLATES = {
    # FLAN's own SQuAD v1 instruction, so a FLAN-T5 base model already knows the format.
    "squad": "Read this and answer the question.\n\n{context}\n\n{question}",
    # The question alone: no passage to read the answer from (for closed-book QA).
    "question": "{question}",
    # The seed experiment's format: the question only, wrapped in its instruction/response prompt.
    "seed": "Instruction: '{question}'\n\nResponse:",
}


def resolve_template(template: str) -> str:
    return TEMPLATES.get(template, template)


def template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(resolve_template(template)) if name is not None}


def template_problem(template: str) -> str | None:
    """A message saying what is wrong with a template, or None when it is usable."""
    try:
        fields = template_fields(template)
    except ValueError:
        return f"data.template '{template}' has unbalanced braces; use {{question}} and {{context}} as placeholders"
    if "question" not in fields:
        names = ", ".join(TEMPLATES)
        return (f"data.template '{template}' is neither a template name ({names}) "
                "nor a string containing {question}")
    unknown = fields - {"question", "context", "title"}
    if unknown:
        return f"data.template uses unknown placeholder(s) {sorted(unknown)}; only {{question}}, {{context}} and {{title}} exist"
    return None


def uses_context(template: str) -> bool:
    return "context" in template_fields(template)


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
