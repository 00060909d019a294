"""What a chat endpoint is asked for question-answer pairs, and how its replies are read.

Replies are read leniently because chat models wrap JSON in prose or code fences, or name the
list differently; whatever cannot be read as pairs is counted as malformed by the caller, never
fatal. The answers are checked against the passage afterwards (checks.locate), so a reply that
paraphrases instead of quoting loses those pairs, not the run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from loraqa.errors import UsageError

PASSAGE, COUNT = "{passage}", "{n}"

DEFAULT_PROMPT = """Write {n} question-answer pairs about the passage below, for training a reading-comprehension model.
Each answer must be a short phrase copied exactly, character for character, from the passage (a name, a number, a date, a few words), never a sentence of your own.
Each question must be answerable from the passage alone and must not quote the answer.
Reply with JSON only, in this form: {"pairs": [{"question": "...", "answer": "..."}]}

Passage:
{passage}"""

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def load_prompt(path: str | None) -> str:
    """The prompt template: the default, or a text file holding {passage} (and optionally {n})."""
    if path is None:
        return DEFAULT_PROMPT
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the prompt file {path}: {exc}") from None
    if PASSAGE not in text:
        raise UsageError(f"the prompt file {path} has no {PASSAGE}: it is where the passage goes")
    return text


def render_prompt(template: str, passage: str, n: int) -> str:
    # str.replace, not str.format: the template's JSON example is full of braces
    return template.replace(COUNT, str(n)).replace(PASSAGE, passage)


def read_pairs(reply: str) -> list[tuple[str, str]] | None:
    """The (question, answer) pairs of a reply; None when it holds no readable pairs."""
    value = _json_in(reply)
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        value = value.get("pairs", lists[0] if len(lists) == 1 else None)
    if not isinstance(value, list):
        return None
    pairs = []
    for item in value:
        if not isinstance(item, dict):
            continue
        q, a = item.get("question", item.get("q")), item.get("answer", item.get("a"))
        if isinstance(q, str) and isinstance(a, str) and q.strip() and a.strip():
            pairs.append((q.strip(), a.strip()))
    return pairs or None


def _json_in(reply: str):
    """The JSON value of a reply: the whole text, a fenced block, or the outermost {...} / [...]."""
    candidates = [reply] + _FENCE.findall(reply)
    for opener, closer in (("{", "}"), ("[", "]")):
        i, j = reply.find(opener), reply.rfind(closer)
        if 0 <= i < j:
            candidates.append(reply[i : j + 1])
    for text in candidates:
        try:
            return json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the parser's depth
            continue
    return None
