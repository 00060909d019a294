"""The passages that questions are written for: spread over the documents, the same for a seed."""

from __future__ import annotations

import random
from dataclasses import dataclass

from loraqa.documents import DocumentError
from loraqa.documents.budget import BudgetedReader
from loraqa.documents.walk import find_files


@dataclass
class SourcePassage:
    document: str  # the document's id
    title: str
    source: str
    page: int | None
    start: int  # character offsets in the document's text
    end: int
    text: str


def sample_passages(by_document: dict[str, list[SourcePassage]], n: int | None, seed: int) -> list[SourcePassage]:
    """Up to n passages (None: all), taken in turn from the documents in a seeded order, each
    document's passages in a seeded order: a few long documents do not crowd out the rest."""
    rng = random.Random(seed)
    queues = []
    for doc in sorted(by_document):
        passages = list(by_document[doc])
        rng.shuffle(passages)
        queues.append(passages)
    rng.shuffle(queues)
    picked: list[SourcePassage] = []
    while queues and (n is None or len(picked) < n):
        for queue in list(queues):
            if n is not None and len(picked) >= n:
                break
            picked.append(queue.pop())
            if not queue:
                queues.remove(queue)
    return picked


def collection_passages(collection) -> dict[str, list[SourcePassage]]:
    """Every passage of a stored collection, by document."""
    out: dict[str, list[SourcePassage]] = {}
    for info in collection.documents():
        out[info.id] = [
            SourcePassage(info.id, info.title, info.source, p.page, p.start, p.end, p.text)
            for p in collection.passages(info.id)
        ]
    return out


def file_passages(
    paths: list[str], passage_chars: int, overlap: int, limits=None, follow_links: bool = False
) -> tuple[dict, list]:
    """The passages of files found, read and cut as `collection add` does (each file within its
    budget, documents.*), without storing them; and the (file, line) of what was skipped."""
    walk = find_files(paths, follow_links)
    out: dict[str, list[SourcePassage]] = {}
    skipped = list(walk.skipped)
    with BudgetedReader(limits, split=(passage_chars, overlap)) as reader:
        for found in walk.files:
            try:
                documents = reader.read(found.path, found.name)
            except DocumentError as exc:
                skipped.append((found.name, exc.template))
                continue
            for doc, passages in documents:
                out[doc.id] = [
                    SourcePassage(doc.id, doc.title, doc.source, p.page, p.start, p.end, p.text) for p in passages or ()
                ]
    return out, skipped
