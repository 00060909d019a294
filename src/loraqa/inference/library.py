"""Answering from collections: the store's collections as the Answerer opens them, and a
question's retrieved passages planned into windows that remember which passage they read.

The answerer does not care where passages come from: the top passages of a collection become
windows in the same batches as any document's, and the answer's citations are those windows'
provenance carried through (inference/reading.py, `citations`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from loraqa.errors import TooMuchWork
from loraqa.inference.reading import WindowInput, plan_reading
from loraqa.retrieval import Collection, Hit, QueryLimits, Store, open_store
from loraqa.retrieval.filters import Filter
from loraqa.retrieval.rerank import reranker
from loraqa.retrieval.search import embedder_for, search


@dataclass
class CollectionSettings:
    """Where an Answerer's questions that come without a passage are answered from."""

    store: str | Path | None = None  # where collections live (default collections/)
    bound: dict[str, str] = field(default_factory=dict)  # adapter -> the collection its questions are answered from
    query_limits: QueryLimits | None = None  # what one search may ask (default 1,000 characters, 100 words)
    embedder: str | None = None  # embeds questions for dense and hybrid search (default: each collection's own)


class Library:
    """The collections of one store, opened once each (from any thread)."""

    def __init__(
        self,
        store: str | Path | Store | None = None,
        query_limits: QueryLimits | None = None,
        embedder: str | None = None,
    ):
        """embedder: the model that embeds queries (a folder or hub name) where it is not found
        by the name a collection recorded (checked to be the same model)."""
        self.store = open_store(store, query_limits) if store is None or isinstance(store, (str, Path)) else store
        self.opened: dict[str, Collection] = {}
        self.lock = threading.Lock()
        self.embedder = embedder

    def open(self, name: str) -> Collection:
        """The collection, opened outside the lock (opening reads the store: one slow store must
        not hold up every other collection); two threads opening it at once keep the first."""
        found = self.opened.get(name)
        if found is not None:
            return found
        collection = self.store.open(name)
        with self.lock:
            return self.opened.setdefault(name, collection)

    def names(self) -> list[str]:
        return self.store.names()

    def search(
        self,
        name: str,
        query: str,
        k: int,
        mode: str | None = None,
        where: Filter | None = None,
        rerank: tuple[str, int] | None = None,
    ) -> list[Hit]:
        """The collection's best passages for a query (mode None or 'auto': hybrid when it has
        vectors, else lexical); rerank (cross-encoder, candidates): the search's best candidates
        re-scored by the cross-encoder, the k best kept."""
        collection = self.open(name)
        mode = None if mode in (None, "auto") else mode
        needs_vectors = mode in ("dense", "hybrid") or (mode is None and collection.embedder_info() is not None)
        embedder = embedder_for(collection, self.embedder) if needs_vectors else None
        if rerank is None:
            return search(collection, query, k, mode, embedder, where)
        model, candidates = rerank
        return reranker(model).rerank(query, search(collection, query, max(k, candidates), mode, embedder, where), k)

    def retrieve(
        self,
        name: str,
        question: str,
        k: int,
        min_score: float = 0.0,
        mode: str | None = None,
        where: Filter | None = None,
        rerank: tuple[str, int] | None = None,
    ) -> list[Hit]:
        """The collection's best passages for a question (within a filter); in lexical mode those
        scoring above min_score (a BM25 value, judged before any reranking)."""
        lexical = mode == "lexical" or (mode in (None, "auto") and self.open(name).embedder_info() is None)
        if rerank is None:
            hits = self.search(name, question, k, mode, where)
            return [hit for hit in hits if hit.score > min_score] if lexical else hits
        model, candidates = rerank
        hits = self.search(name, question, max(k, candidates), mode, where)
        if lexical:
            hits = [hit for hit in hits if hit.score > min_score]
        return reranker(model).rerank(question, hits, k)


def plan_passages(
    tokenizer,
    question: str,
    hits: list[Hit],
    settings,
    offsets_cache: dict | None = None,
    max_windows: int | None = None,
) -> list[WindowInput]:
    """The windows of every retrieved passage (one each, unless a passage is longer than the
    window), each knowing which passage it reads."""
    inputs: list[WindowInput] = []
    for n, hit in enumerate(hits):
        budget = None if max_windows is None else max_windows - len(inputs)
        if budget is not None and budget <= 0:
            raise TooMuchWork(f"the retrieved passages need more than {max_windows} windows")
        for window in plan_reading(
            tokenizer,
            question,
            hit.text,
            settings.shape,
            title=hit.title,
            offsets_cache=offsets_cache,
            max_windows=budget,
        ):
            window.origin = n
            inputs.append(window)
    return inputs
