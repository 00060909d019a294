"""Cutting a document into passages: what retrieval finds and the reader reads.

Passages are cut at paragraph boundaries (blank lines), a heading or a new page always starting
a new one (so each passage has one page and one section), and hold up to `max_chars` characters; a paragraph longer than that is cut at sentence ends (or, for
a sentence longer still, at spaces). Consecutive passages of a section share up to `overlap`
characters of whole sentences or paragraphs, so a fact cut by a passage boundary is whole in
one of them. Each passage keeps its character offsets in the document's text (its text is
exactly `document.text[start:end]`), its page and its section heading, so an answer read in it
can be cited in the original.

A passage longer than the reader's window beside a question is still read whole: the reader
reads it in overlapping windows, as any long passage.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass

from loraqa.documents.document import Document

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n")


@dataclass
class Passage:
    document_id: str
    index: int  # its place among the document's passages
    start: int  # character offsets in the document's text
    end: int
    text: str
    page: int | None = None  # 1-based, for documents with pages
    heading: str | None = None


def _pieces(text: str, start: int, end: int, pattern: re.Pattern) -> Iterator[tuple[int, int]]:
    """[start, end) cut after the matches of `pattern` into pieces holding more than whitespace,
    one at a time: a 50 MB paragraph of one-word sentences is millions of pieces."""
    at = start
    for m in pattern.finditer(text, start, end):
        if m.start() > at:
            if not text[at : m.start()].isspace():
                yield at, m.start()
            at = m.end()
    if at < end and not text[at:end].isspace():
        yield at, end


@dataclass
class _Unit:
    start: int
    end: int
    paragraph: bool  # starts a paragraph
    section: bool  # starts a section (a heading) or a page: passages never run across one


def _units(doc: Document, max_chars: int) -> Iterator[_Unit]:
    """Each paragraph's sentences (over-long sentences cut into word runs), whitespace trimmed,
    in order, one at a time."""
    text, boundaries = doc.text, {at for at, _ in doc.headings} | set(doc.page_starts)
    for start, end in _pieces(text, 0, len(text), _PARAGRAPH_BREAK):
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start >= end:
            continue
        first = True
        for s, e in _pieces(text, start, end, _SENTENCE_END):
            for ws, we in _cut_long(text, s, e, max_chars):
                yield _Unit(ws, we, first, first and start in boundaries)
                first = False


def _cut_long(text: str, start: int, end: int, max_chars: int) -> Iterator[tuple[int, int]]:
    """A sentence longer than max_chars, cut at the last space before each limit (or at it)."""
    while end - start > max_chars:
        cut = text.rfind(" ", start + 1, start + max_chars)
        cut = cut if cut > start else start + max_chars
        yield start, cut
        start = cut + (1 if text[cut : cut + 1] == " " else 0)
    if end > start:
        yield start, end


def passage_spans(
    doc: Document, max_chars: int = 1000, overlap: int = 200, limit: int | None = None
) -> Iterator[tuple[int, int]]:
    """The (start, end) of each passage, in reading order: sentences gathered up to max_chars,
    cut early at a paragraph's start once a passage is 60% full, always at a heading; each
    passage but a section's first starts with the previous one's last sentences (up to `overlap`
    characters). Only the passage being gathered is held, whatever the document's length.
    limit: raise TooManyPassages past this many."""
    current: list[_Unit] = []
    count = 0
    for unit in _units(doc, max_chars):
        if current:
            size = unit.end - current[0].start
            full_enough = unit.paragraph and unit.start - current[0].start >= 0.6 * max_chars
            if unit.section or size > max_chars or full_enough:
                count += 1
                if limit is not None and count > limit:
                    raise TooManyPassages(limit)
                yield current[0].start, current[-1].end
                carried = [] if unit.section else _tail(current, overlap)
                current = carried if carried and unit.end - carried[0].start <= max_chars else []
        current.append(unit)
    if current:
        if limit is not None and count + 1 > limit:
            raise TooManyPassages(limit)
        yield current[0].start, current[-1].end


class TooManyPassages(Exception):
    """A document cuts into more passages than the limit allows."""

    def __init__(self, limit: int):
        super().__init__(f"cuts into more than {limit:,} passages")
        self.limit = limit


def locate(doc: Document):
    """(page_of, heading_of) for offsets of the document, each a binary search (the lists are
    built once: a document with 100,000 headings must not cost 100,000 steps per passage)."""
    heading_starts = [at for at, _ in doc.headings]

    def heading_of(offset: int) -> str | None:
        i = bisect.bisect_right(heading_starts, offset)
        return doc.headings[i - 1][1] if i else None

    return doc.page_at, heading_of


def split_document(doc: Document, max_chars: int = 1000, overlap: int = 200, limit: int | None = None) -> list[Passage]:
    """The document's passages (see passage_spans), each with its text, page and heading."""
    page_of, heading_of = locate(doc)
    return [
        Passage(doc.id, i, s, e, doc.text[s:e], page_of(s), heading_of(s))
        for i, (s, e) in enumerate(passage_spans(doc, max_chars, overlap, limit))
    ]


def _tail(units: list[_Unit], overlap: int) -> list[_Unit]:
    """The last sentences of a passage that fit in `overlap` characters (never all of them)."""
    out: list[_Unit] = []
    for unit in reversed(units[1:]):
        if units[-1].end - unit.start > overlap:
            break
        out.insert(0, unit)
    return out
