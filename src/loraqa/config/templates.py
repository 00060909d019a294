"""Prompt templates by name, and what makes a template string usable.

Part of the configuration: a run's config.yaml names its template (`data.template`), and every
later use (eval, predict, serve) renders questions with the same one. data/prompts.py renders.
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
    # data.task=question_generation: the rows are turned around (data/tasks.py), so the slot that
    # holds a question in QA holds the answer to write a question for, and the target is the question.
    "question_generation": "Write a question about this passage whose answer is: {question}\n\n{context}",
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
        return f"data.template '{template}' is neither a template name ({names}) nor a string containing {{question}}"
    unknown = fields - {"question", "context", "title"}
    if unknown:
        return f"data.template uses unknown placeholder(s) {sorted(unknown)}; only {{question}}, {{context}} and {{title}} exist"
    return None


def uses_context(template: str) -> bool:
    return "context" in template_fields(template)
