"""The checks a generated pair must pass before it becomes training data.

Each check names its reason for dropping a pair, so the report says what went wrong where:
the answer must be quoted from the passage (offsets recorded), the question must be new for its
document (exact and near duplicates), and a reader must give the same answer from the passage
(answer F1 >= min_roundtrip_f1), the round-trip consistency filter of Alberti et al. 2019.
A question the writer did not finish (it reached its token limit: a loop, "What did Nemomomo...")
is dropped whatever the reader makes of it.
A question may not name what the passage never mentions: a writer that garbles a name ("Retomo"
for "Refevi") asks about nobody, and a reader that answers it anyway teaches the wrong person's
answer.
"""

from __future__ import annotations

import re

from loraqa.data.tasks import quoted_at
from loraqa.evaluation.metrics import f1_v1, normalize_answer
from loraqa.retrieval.store import content_words

NOT_IN_PASSAGE, DUPLICATE, NEAR_DUPLICATE, EMPTY, ROUND_TRIP, UNKNOWN_NAME, CUT_OFF = (
    "answer_not_in_passage",
    "duplicate_question",
    "near_duplicate_question",
    "empty",
    "round_trip",
    "name_not_in_passage",
    "question_cut_off",
)
# Share of the shorter question's content words that the other also has, from which two questions
# count as asking the same thing ("Which river flows through Paris?" and "... through the city of Paris?").
NEAR_DUPLICATE_OVERLAP = 0.8


def locate(answer: str, passage: str, hint: int | None = None) -> int | None:
    """Where the answer is quoted in the passage: at the hint when it is there, else its first
    occurrence, else case- and space-insensitively; None when it is not in the passage."""
    span = locate_span(answer, passage, hint)
    return span[0] if span else None


def locate_span(answer: str, passage: str, hint: int | None = None) -> tuple[int, int] | None:
    """(start, end) of the answer as the passage writes it (see locate), in linear time: the
    loose search compares both texts lower-cased with whitespace runs as one space (a pattern
    of the answer's words joined by \\s+ backtracks quadratically on a long answer)."""
    answer = answer.strip()
    if not answer:
        return None
    at = quoted_at(answer, passage, hint)
    if at >= 0:
        return at, at + len(answer)
    loose, where = _loose(passage)
    wanted, _ = _loose(answer)
    i = loose.find(wanted)
    if i < 0 or not wanted:
        return None
    return where[i], where[i + len(wanted) - 1] + 1


def _loose(text: str) -> tuple[str, list[int]]:
    """The text lower-cased (character by character, so lengths hold) with each whitespace run as
    one space and the ends trimmed, and where each of its characters stands in the text."""
    chars: list[str] = []
    where: list[int] = []
    for i, c in enumerate(text):
        if c.isspace():
            if chars and chars[-1] != " ":
                chars.append(" ")
                where.append(i)
            continue
        low = c.lower()
        chars.append(low if len(low) == 1 else c)
        where.append(i)
    if chars and chars[-1] == " ":
        chars.pop()
        where.pop()
    return "".join(chars), where


# A word of letters (any script), with the apostrophes and hyphens names carry ("O'Neill", "Jean-Luc").
_WORD = re.compile(r"[^\W\d_][\w'’-]*")
# What comes before a sentence's first word: nothing or a sentence's end, then spaces, quotes, brackets.
_SENTENCE_START = re.compile(r"(?:^|[.?!:])[\s\"'“‘(]*$")


def unknown_names(question: str, passage: str) -> list[str]:
    """The capitalised words of the question, but for a sentence's first, that the passage never
    has as a word (case-insensitively; a possessive "'s" aside): names the writer made up or garbled."""
    out = []
    for m in _WORD.finditer(question):
        if _SENTENCE_START.search(question[: m.start()]):
            continue  # a sentence's first word is capitalised whatever it is
        word = re.sub(r"['’]s$", "", m.group()).strip("'’-")
        if not word or not word[0].isupper() or word == "I":
            continue
        if not re.search(rf"(?<![\w]){re.escape(word)}(?![\w])", passage, re.IGNORECASE):
            out.append(word)
    return out


class QuestionLedger:
    """The questions kept so far, per document, to drop repeats.

    A near repeat shares most content words with a kept question and asks for the same answer
    (one answer holding the other). Words alone are not enough: "What did Suka Dasabo buy?" and
    "Where did Suka Dasabo buy the clock?" share every content word of the first (question words
    are stop words) yet ask for "a black clock" and "Osk"."""

    def __init__(self):
        self.seen: dict[str, list[tuple[set[str], str | None]]] = {}
        self.exact: set[tuple[str, str]] = set()

    def check(self, document: str, question: str, answer: str | None = None) -> str | None:
        """A reason to drop the question, or None (and then it is remembered). Without an answer,
        content words alone decide a near repeat."""
        norm = normalize_answer(question)
        if not norm:
            return EMPTY
        if (document, norm) in self.exact:
            return DUPLICATE
        words = set(content_words(norm))
        said = None if answer is None else normalize_answer(answer)
        for other, other_said in self.seen.get(document, []):
            if len(words & other) / max(1, min(len(words), len(other))) >= NEAR_DUPLICATE_OVERLAP and _same_answer(
                said, other_said
            ):
                return NEAR_DUPLICATE
        self.exact.add((document, norm))
        self.seen.setdefault(document, []).append((words, said))
        return None


def _same_answer(a: str | None, b: str | None) -> bool:
    """Whether two normalised answers could be one (either unknown, or one holds the other)."""
    return a is None or b is None or f" {a} " in f" {b} " or f" {b} " in f" {a} "


def round_trip_f1(reader_answer: str, answer: str) -> float:
    """How well the reader's answer (\"\" when it abstained) recovers the pair's answer."""
    return f1_v1(reader_answer, answer) if reader_answer else 0.0
