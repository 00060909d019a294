"""The passages that questions are written for: spread over the documents, the same for a seed."""

from __future__ import annotations

import random
from dataclasses import dataclass


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
        out[info.id] = [SourcePassage(info.id, info.title, info.source, p.page, p.start, p.end, p.text)
                        for p in collection.passages(info.id)]
    return out


def file_passages(paths: list[str], passage_chars: int, overlap: int, max_file_mb: float) -> tuple[dict, list]:
    """The passages of files read and cut as `collection add` would, without storing them;
    and the (file, reason) of those that could not be read."""
    from loraqa.documents import DocumentError, read_path, split_document
    from loraqa.retrieval.ingest import expand

    out: dict[str, list[SourcePassage]] = {}
    skipped = []
    for path in expand(paths):
        try:
            documents = read_path(path, max_file_mb)
        except DocumentError as exc:
            skipped.append((str(path), exc.template))
            continue
        for doc in documents:
            out[doc.id] = [SourcePassage(doc.id, doc.title, doc.source, p.page, p.start, p.end, p.text)
                           for p in split_document(doc, passage_chars, overlap)]
    return out, skipped
