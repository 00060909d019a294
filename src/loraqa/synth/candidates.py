"""Answers worth asking about in a passage, for generators that write a question per answer.

Hand-written because the libraries that find named entities (spaCy, stanza) need models that
are downloaded per language; these patterns need nothing and the round-trip filter removes the
candidates no reader can recover. Names and numbers come first (what SQuAD's answers mostly are),
then short phrases led by an article, then single content words, so that a passage without names
still gets questions.
"""

from __future__ import annotations

import random
import re

from loraqa.retrieval.store import STOPWORDS

# Runs of capitalised words, optionally joined by "of", "de", "von"... ("Bank of England").
_NAME = re.compile(r"\b[A-Z][\w'’-]*(?:\s+(?:(?:of|de|da|von|van|der|la|le|the|and)\s+)?[A-Z][\w'’-]*)*")
# Numbers with their unit or the word after them ("5 mg", "1,200 metres", "1896", "3.5%", "17th century").
_NUMBER = re.compile(r"\b\d[\d,.]*(?:st|nd|rd|th)?(?:\s?%|\s[a-zA-Zµ]+)?")
# A short phrase led by an article ("a pink clock", "an old map"): what "what did ... buy?" asks for.
_PHRASE = re.compile(r"\b(?:a|an)\s+[a-z][\w-]*(?:\s+[a-z][\w-]*)?\b")
_WORD = re.compile(r"\b[a-zA-Z][a-z'-]{2,}\b")
_SENTENCE_START = re.compile(r"(?:^|[.!?:]\s+|\n)$")


def _trim(span: str) -> str:
    """Without the stop words at either end ("The Seine" -> "Seine", "1903 and" -> "1903")."""
    words = span.strip().rstrip(".,;:").split()
    while words and words[0].lower() in STOPWORDS:
        words = words[1:]
    while words and words[-1].lower() in STOPWORDS:
        words = words[:-1]
    return " ".join(words)


def _spans(pattern: re.Pattern, text: str, trim: bool = True) -> list[tuple[int, str]]:
    out = []
    for m in pattern.finditer(text):
        span = _trim(m.group()) if trim else m.group().strip()
        if span:
            out.append((text.find(span, m.start()), span))
    return out


def answer_candidates(text: str, k: int, seed: int | str) -> list[tuple[str, int]]:
    """Up to k (answer, start) pairs from the passage, names and numbers first, each text once."""
    rng = random.Random(seed)
    names: list[tuple[int, str]] = []  # (start, text)
    words: list[tuple[int, str]] = []
    for start, name in _spans(_NAME, text):
        # A lone capitalised word at a sentence start ("Most", "Last") is as likely a plain word.
        (words if " " not in name and _SENTENCE_START.search(text[:start]) else names).append((start, name))
    numbers = _spans(_NUMBER, text)
    # kept whole ("a pink clock" is the answer SQuAD-style data gives); none ends in a stop word
    phrases = [(st, t) for st, t in _spans(_PHRASE, text, trim=False) if t.split()[-1] not in STOPWORDS]
    inside = [(st, st + len(t)) for st, t in names if " " in t]  # "Nereli" of "Vipe Nereli" is not one more
    words += [
        (st, t)
        for st, t in _spans(_WORD, text)
        if t.lower() not in STOPWORDS and not any(a <= st < b for a, b in inside)
    ]
    out: list[tuple[str, int]] = []
    seen: set[str] = set()
    for tier in (names + numbers, phrases, words):
        rng.shuffle(tier)
        for start, answer in tier:
            key = answer.lower()
            if len(out) >= k:
                return out
            if key in seen or len(answer) < 2:
                continue
            seen.add(key)
            out.append((answer, start))
    return out
