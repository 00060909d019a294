"""The store interface: what every backend (SQLite, PostgreSQL, ...) does for a collection.

A store holds named collections; a collection holds documents (whole texts, with pages and
headings) and their passages, searchable by BM25. Writes go document by document, each in one
transaction, so a crash never leaves half a document searchable and a rerun finishes the rest.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import Protocol

from loraqa.adapters.names import NAME_PATTERN
from loraqa.documents import Document, Passage
from loraqa.errors import QueryTooLong, UsageError

# Words too common to help ranking: left out of queries, so a question's "the" and "what" do not
# make the index walk half the collection (BM25 would give them almost no weight anyway).
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "he",
        "her",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "she",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)
_WORD = re.compile(r"\w+", re.UNICODE)


def check_collection_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise UsageError(
            f"collection name {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )


@dataclass(frozen=True)
class QueryLimits:
    """What one search may ask of a store, the same on every surface (HTTP, MCP, the Python API,
    the command line): each word of a query costs an index lookup, and a 40,000-word query held a
    server thread for minutes."""

    max_chars: int = 1_000
    max_words: int = 100

    def __post_init__(self):
        if not (self.max_chars > 0 and self.max_words > 0):
            raise UsageError(f"query limits must be > 0, got {self.max_chars} characters and {self.max_words} words")


def content_words(text: str) -> list[str]:
    """The words of a text that search for something (lower case, no stop words, each once; all
    of them when every one is a stop word)."""
    words = [w.lower() for w in _WORD.findall(text)]
    kept = [w for w in words if w not in STOPWORDS] or words
    return list(dict.fromkeys(kept))


def query_terms(query: str, limits: QueryLimits | None = None) -> list[str]:
    """A search query's content words; a query that is empty or over the limits is refused."""
    limits = limits or QueryLimits()
    if not isinstance(query, str):
        raise UsageError("the query must be text")
    if len(query) > limits.max_chars:
        raise QueryTooLong(f"the query is longer than {limits.max_chars:,} characters")
    if sum(1 for _ in _WORD.finditer(query)) > limits.max_words:
        raise QueryTooLong(f"the query has more than {limits.max_words:,} words")
    terms = content_words(query)
    if not terms:
        raise UsageError("the query is empty: give some words to search for")
    return terms


def is_conflict(stored_file: str | None, file: str | None) -> bool:
    """A document id already stored from another file: putting it would silently replace that
    file's document (and a rerun would skip this file as done), so it is refused instead."""
    return stored_file is not None and file is not None and stored_file != file


@dataclass(frozen=True)
class Settings:
    """How a collection cuts its documents; fixed when the collection is made."""

    passage_chars: int = 1000
    overlap: int = 200

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Hit:
    """A passage found by a search, with where it sits in its document."""

    document: str  # the document's id
    title: str
    source: str
    page: int | None
    start: int  # character offsets in the document's text
    end: int
    score: float  # higher is a better match: BM25 (lexical), cosine (dense), fused (hybrid)
    text: str
    snippet: str = ""  # around the query's words, each marked «like this»
    heading: str | None = None
    collection: str = ""
    passage_id: int = -1  # the store's own id of the passage (fusing two searches' hits)

    def as_dict(self) -> dict:
        out = asdict(self)
        del out["passage_id"]
        return out

    @classmethod
    def of_row(cls, row: Sequence, collection: str, passage_id: int) -> Hit:
        """A hit from a search's row, whose first ten columns are the fields document to heading."""
        document, title, source, page, start, end, score, text, snippet, heading = row[:10]
        return cls(document, title, source, page, start, end, score, text, snippet, heading, collection, passage_id)


@dataclass
class DocumentInfo:
    id: str
    title: str
    source: str
    passages: int
    characters: int
    modified: float | None


class Collection(Protocol):
    name: str
    settings: Settings

    @property
    def query_limits(self) -> QueryLimits:
        """What one search may ask (the store's limits)."""

    def put(self, document: Document, passages: list[Passage], file: str | None = None, vectors=None) -> str:
        """Add a document (read from `file`) in one transaction, its passages' vectors (an array,
        one row per passage) with it: 'added', 'replaced' (the same source or id with other
        text), 'unchanged' (this text is already there), or 'conflict' (its id is taken by a
        document of another file: nothing written)."""

    def batch(self, passages: int = 2000) -> AbstractContextManager[None]:
        """Inside it, documents may share transactions of about `passages` passages (never part
        of a document in one, another part in the next)."""
        ...

    def file_unchanged(self, path: str, modified: float, size: int) -> bool:
        """Whether `path` was read whole, at this modification time and size, by an earlier add."""

    def file_done(self, path: str, modified: float, size: int) -> None: ...

    def close(self) -> None:
        """After writing: leave the store whole on disk for any reader (SQLite: the write-ahead
        log folded into the database, which a user who may not write it reads immutable)."""

    def remove(self, document_id: str) -> bool: ...

    def documents(self) -> list[DocumentInfo]: ...

    def document(self, document_id: str) -> Document | None: ...

    def passages(self, document_id: str) -> list[Passage]: ...

    def search(self, query: str, k: int = 5, where=None) -> list[Hit]:
        """The k passages with the best BM25 (where: a retrieval.filters.Filter: only its passages)."""

    def embedder_info(self) -> dict | None:
        """{"name", "fingerprint", "dim"} of the model the collection's vectors come from (None: none)."""

    def set_embedder(self, info: dict | None) -> None:
        """Record the collection's embedder; a different one (or None) deletes every vector."""

    def put_vectors(self, document_id: str, vectors) -> None:
        """The vectors of a document's passages, in passage order, in one transaction."""

    def documents_without_vectors(self) -> list[str]: ...

    def nearest(self, vector, k: int = 5, where=None) -> list[Hit]:
        """The k passages whose vectors are closest to `vector` (cosine; where as in search)."""

    def similarities(self, vector, passage_ids: list[int]) -> dict[int, float]:
        """The cosine of these passages' vectors with `vector`."""

    def counts(self) -> tuple[int, int]:
        """(documents, passages)."""


class Store(Protocol):
    def names(self) -> list[str]: ...

    def open(self, name: str) -> Collection:
        """An existing collection (UsageError naming the ones there are, otherwise)."""

    def create(self, name: str, settings: Settings) -> Collection:
        """The collection, made with `settings` if it is new."""

    def drop(self, name: str) -> None: ...
