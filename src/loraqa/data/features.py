"""Tokenise rows into model features.

Long contexts: a source window of `max_source_length` tokens rarely holds a whole SQuAD
passage with the prompt around it. The question and the template text are always kept whole;
only the passage is cut. For training the cut is a window of the passage, at token boundaries,
that contains the answer (centred on it), so the model never learns to answer from a passage
that no longer holds the answer. For evaluation, where the answer is unknown, the passage is
kept from its start. Rows whose answer cannot fit the window are dropped and counted.
Labels are the answer tokens plus EOS; the collator pads them with -100 so padding never
enters the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from loraqa.config.templates import uses_context
from loraqa.data.prompts import render_source, render_target

# Re-tokenising a cut passage can merge or split a token at the cut, so keep a small margin.
_MARGIN = 4


@dataclass
class FeatureCounts:
    rows: int = 0
    context_truncated: int = 0
    source_truncated: int = 0
    target_truncated: int = 0
    dropped_answer_outside_window: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _prompt_overhead(tokenizer, template: str, row: dict) -> int:
    """Tokens the prompt takes besides the passage (question, instruction, EOS)."""
    return len(tokenizer(render_source(template, row, context=""))["input_ids"])


def window_context(tokenizer, template: str, row: dict, max_len: int, keep_answer: bool) -> tuple[str | None, bool]:
    """The passage text to use (None: the answer cannot fit) and whether it was cut."""
    context = row["context"]
    budget = max_len - _prompt_overhead(tokenizer, template, row) - _MARGIN
    enc = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    if len(offsets) <= budget:
        return context, False
    if budget <= 0:
        return None, True
    start_tok = 0
    texts = row["answers"]["text"]
    if keep_answer and texts:
        a_text = texts[0]
        a_start = row["answers"]["answer_start"][0]
        if a_start < 0 or context[a_start:a_start + len(a_text)] != a_text:
            a_start = context.find(a_text)
        a_end = a_start + len(a_text)
        first = next(i for i, (s, e) in enumerate(offsets) if e > a_start)
        last = next((i for i, (s, e) in enumerate(offsets) if e >= a_end), len(offsets) - 1)
        span = last - first + 1
        if span > budget:
            return None, True
        # centre the answer in the window, clamped to the passage
        start_tok = max(0, min(first - (budget - span) // 2, len(offsets) - budget))
    end_tok = start_tok + budget - 1
    return context[offsets[start_tok][0]:offsets[end_tok][1]], True


def encode_source(tokenizer, row: dict, template: str, max_source: int, keep_answer: bool,
                  counts: FeatureCounts) -> list[int] | None:
    """Source token ids within the window; None when the answer cannot fit (training only)."""
    context = row.get("context") or ""
    if uses_context(template):
        window, cut = window_context(tokenizer, template, row, max_source, keep_answer=keep_answer)
        if window is None and keep_answer:
            counts.dropped_answer_outside_window += 1
            return None
        context = window or ""
        counts.context_truncated += int(cut)
    source = tokenizer(render_source(template, row, context=context))["input_ids"]
    if len(source) > max_source:
        counts.source_truncated += 1
        source = source[: max_source - 1] + [tokenizer.eos_token_id]
    return source


def encode_row(tokenizer, row: dict, template: str, max_source: int, max_target: int,
               unanswerable_text: str, train: bool, counts: FeatureCounts) -> dict | None:
    counts.rows += 1
    source = encode_source(tokenizer, row, template, max_source, keep_answer=train, counts=counts)
    if source is None:
        return None
    target = tokenizer(render_target(row, unanswerable_text))["input_ids"]
    if len(target) > max_target:
        counts.target_truncated += 1
        target = target[: max_target - 1] + [tokenizer.eos_token_id]
    return {"input_ids": source, "attention_mask": [1] * len(source), "labels": target, "length": len(source)}


def build_features(tokenizer, rows: list[dict], data_cfg, train: bool):
    """A datasets.Dataset of features for the Trainer, plus the truncation counts."""
    import datasets

    from rich.progress import track

    counts = FeatureCounts()
    feats = []
    label = "tokenising train" if train else "tokenising test"
    for row in track(rows, description=label, disable=len(rows) < 2000, transient=True):
        f = encode_row(tokenizer, row, data_cfg.template, data_cfg.max_source_length,
                       data_cfg.max_target_length, data_cfg.unanswerable_text, train, counts)
        if f is not None:
            feats.append(f)
    return datasets.Dataset.from_list(feats) if feats else None, counts
