"""Reading a passage longer than the source window: overlapping windows of it, at token boundaries.

The question and the instruction are kept whole in every window; only the passage is cut.
Windows advance by (window - overlap) tokens, where the overlap is `data.doc_stride` (a third of the window unless set): an
answer cut by one window's edge is whole in the next, and no text is ever skipped (the
overlap is never negative, and never more than half a window, so every window reads new text).
Each window keeps its character offsets in the document, so an answer found in a window can
be pointed at in the original text.
"""

from __future__ import annotations

from dataclasses import dataclass

from loraqa.data.prompts import render_source
from loraqa.errors import QuestionTooLong

# Re-tokenising a cut passage can merge or split a token at the cut, so keep a small margin.
MARGIN = 4
# A window must leave at least this many tokens for the passage, or it reads nothing useful.
MIN_PASSAGE_TOKENS = 8


@dataclass
class PassageWindow:
    text: str  # the window's passage
    start: int  # character offsets of the window in the document
    end: int
    first_token: int  # token range of the window in the tokenised document
    last_token: int  # exclusive


def passage_budget(tokenizer, template: str, row: dict, max_source: int) -> int:
    """Tokens left for the passage in a window once the prompt (question, instruction, EOS) is in."""
    overhead = len(tokenizer(render_source(template, row, context=""))["input_ids"])
    return max_source - overhead - MARGIN


def check_budget(budget: int, max_source: int) -> None:
    if budget < MIN_PASSAGE_TOKENS:
        raise QuestionTooLong(
            f"the question and instruction take nearly all of the {max_source}-token window, "
            f"leaving {max(budget, 0)} tokens for the passage; shorten the question "
            "(or raise data.max_source_length)"
        )


def window_starts(n_tokens: int, budget: int, overlap: int) -> list[int]:
    """First token of each window: windows of `budget` tokens, `overlap` tokens shared between
    neighbours, the last one ending at the end of the passage."""
    if n_tokens <= budget:
        return [0]
    step = budget - min(overlap, budget // 2)  # a long question shrinks the window: keep reading new text
    starts = list(range(0, n_tokens - budget, step))
    return starts + [n_tokens - budget]


def tokenise_passage(tokenizer, context: str) -> list[tuple[int, int]]:
    """Character offsets of each token of the passage."""
    return tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]


def window_at(context: str, offsets: list[tuple[int, int]], first: int, last: int) -> PassageWindow:
    start, end = offsets[first][0], offsets[last - 1][1]
    return PassageWindow(context[start:end], start, end, first, last)


def split_passage(context: str, offsets: list[tuple[int, int]], budget: int, overlap: int) -> list[PassageWindow]:
    """The windows that together read the whole passage (one when it fits)."""
    if len(offsets) <= budget:
        return [PassageWindow(context, 0, len(context), 0, len(offsets))]
    return [window_at(context, offsets, s, s + budget) for s in window_starts(len(offsets), budget, overlap)]


def answer_token_span(context: str, offsets: list[tuple[int, int]], answer: str, answer_start: int) -> tuple[int, int]:
    """Token range (first, last inclusive) of the answer in the passage."""
    if answer_start < 0 or context[answer_start : answer_start + len(answer)] != answer:
        answer_start = context.find(answer)
    answer_end = answer_start + len(answer)
    first = next(i for i, (s, e) in enumerate(offsets) if e > answer_start)
    last = next((i for i, (s, e) in enumerate(offsets) if e >= answer_end), len(offsets) - 1)
    return first, last


def window_around(context: str, offsets: list[tuple[int, int]], budget: int, first: int, last: int) -> PassageWindow:
    """A window holding tokens first..last, centred on them, clamped to the passage."""
    span = last - first + 1
    start = max(0, min(first - (budget - span) // 2, len(offsets) - budget))
    return window_at(context, offsets, start, start + budget)
