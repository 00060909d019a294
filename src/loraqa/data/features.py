"""Tokenise rows into model features (training and the teacher-forced metrics).

Long passages: the question and instruction are kept whole; the passage is cut to a window
(data/windows.py) that holds the answer, so the model never learns to answer from a passage
that no longer holds the answer. Rows whose answer cannot fit the window are dropped
and counted. With `data.negative_windows: N`, a long training passage also yields up to N
windows that do not hold the answer, labelled with the no-answer text, so the model learns to
abstain in the windows it will be shown at answering time (which reads every window).
Labels are the answer tokens plus EOS; the collator pads them with -100 so padding never
enters the loss.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from loraqa.config.templates import uses_context
from loraqa.data.prompts import render_source, render_target
from loraqa.data.tasks import QA, answer_in_passage
from loraqa.data.windows import (
    answer_token_span,
    passage_budget,
    split_passage,
    tokenise_passage,
    window_around,
    window_at,
)
from loraqa.reporting import say


@dataclass
class FeatureCounts:
    """What tokenising did to the rows (data_report.json's `features`)."""

    rows: int = 0
    context_truncated: int = 0  # passages longer than the window: the row reads one window of it
    source_truncated: int = 0  # sources still too long after re-tokenising the window: cut at the end
    target_truncated: int = 0  # answers longer than data.max_target_length
    dropped_answer_outside_window: int = 0  # training rows whose answer cannot fit a window
    negative_windows: int = 0  # windows without the answer, labelled with the no-answer text

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def encode_prompt(
    tokenizer, template: str, row: dict, window: str | None, max_source: int, counts: FeatureCounts | None = None
) -> list[int]:
    """Source token ids for a row with `window` as its passage (None: the row's own)."""
    source = tokenizer(render_source(template, row, context=window))["input_ids"]
    if len(source) > max_source:  # only when the margin for re-tokenising was not enough
        if counts is not None:
            counts.source_truncated += 1
        source = source[: max_source - 1] + [tokenizer.eos_token_id]
    return source


def _answer_window(tokenizer, row: dict, data_cfg, train: bool) -> tuple[str | None, bool]:
    """(the passage text to put in the source, whether it was cut); None: the answer cannot fit
    (training drops the row). A long passage's window is one of the windows answering reads
    (data/windows.py) that holds the whole answer, chosen by a seed of (data.seed, row id): the
    model learns from windows like those it will be shown, with the answer anywhere in them."""
    context = row.get("context") or ""
    offsets = tokenise_passage(tokenizer, context)
    budget = passage_budget(tokenizer, data_cfg.template, row, data_cfg.max_source_length)
    if len(offsets) <= budget:
        return context, False
    if budget <= 0:
        return None, True
    span = answer_in_passage(row)
    if span is None:  # no answer to keep: the passage's first window
        return window_at(context, offsets, 0, budget).text, True
    first, last = answer_token_span(context, offsets, *span)
    if last - first + 1 > budget:
        return (None if train else window_at(context, offsets, 0, budget).text), True
    holding = [
        w
        for w in split_passage(context, offsets, budget, data_cfg.window_overlap)
        if w.first_token <= first and last < w.last_token
    ]
    if not holding:  # an answer longer than the windows' overlap, across a window edge
        return window_around(context, offsets, budget, first, last).text, True
    return random.Random(f"{data_cfg.seed}:{row.get('id')}").choice(holding).text, True


def _feature(tokenizer, source: list[int], target_text: str, max_target: int, counts: FeatureCounts) -> dict:
    target = tokenizer(target_text)["input_ids"]
    if len(target) > max_target:
        counts.target_truncated += 1
        target = target[: max_target - 1] + [tokenizer.eos_token_id]
    return {"input_ids": source, "attention_mask": [1] * len(source), "labels": target, "length": len(source)}


def encode_row(tokenizer, row: dict, data_cfg, train: bool, counts: FeatureCounts) -> dict | None:
    """The feature of a row's answer window; None when the answer cannot fit (training only)."""
    counts.rows += 1
    window = None
    if uses_context(data_cfg.template):
        window, cut = _answer_window(tokenizer, row, data_cfg, train)
        if window is None:
            counts.dropped_answer_outside_window += 1
            return None
        counts.context_truncated += int(cut)
    source = encode_prompt(tokenizer, data_cfg.template, row, window, data_cfg.max_source_length, counts)
    return _feature(
        tokenizer, source, render_target(row, data_cfg.unanswerable_text), data_cfg.max_target_length, counts
    )


def negative_features(tokenizer, row: dict, data_cfg, counts: FeatureCounts) -> list[dict]:
    """Up to data.negative_windows windows of a long passage that do not hold the answer,
    labelled with the no-answer text; chosen by a seed of (data.seed, row id), so reruns agree."""
    n = data_cfg.negative_windows
    if n <= 0 or not uses_context(data_cfg.template) or data_cfg.task != QA:
        return []  # a question is written for an answer the window holds: there is no "no answer" to learn
    context = row.get("context") or ""
    offsets = tokenise_passage(tokenizer, context)
    budget = passage_budget(tokenizer, data_cfg.template, row, data_cfg.max_source_length)
    if len(offsets) <= budget or budget <= 0:
        return []
    windows = split_passage(context, offsets, budget, data_cfg.window_overlap)
    span = answer_in_passage(row)
    if span is not None:
        first, last = answer_token_span(context, offsets, *span)
        windows = [w for w in windows if w.last_token <= first or w.first_token > last]
    else:  # an unanswerable question: its first window is already the row's own feature
        windows = windows[1:]
    picked = random.Random(f"{data_cfg.seed}:{row['id']}").sample(windows, min(n, len(windows)))
    counts.negative_windows += len(picked)
    return [
        _feature(
            tokenizer,
            encode_prompt(tokenizer, data_cfg.template, row, w.text, data_cfg.max_source_length, counts),
            data_cfg.unanswerable_text,
            data_cfg.max_target_length,
            counts,
        )
        for w in picked
    ]


def build_features(tokenizer, rows: list[dict], data_cfg, train: bool):
    """A datasets.Dataset of features for the Trainer, plus the truncation counts."""
    import datasets

    counts = FeatureCounts()
    feats = []
    if len(rows) >= 2000:  # a few seconds: said, so a quiet terminal is not taken for a hang
        say(f"tokenising {len(rows)} {'training' if train else 'test'} rows")
    for row in rows:
        f = encode_row(tokenizer, row, data_cfg, train, counts)
        if f is not None:
            feats.append(f)
            if train:
                feats += negative_features(tokenizer, row, data_cfg, counts)
    return datasets.Dataset.from_list(feats) if feats else None, counts
