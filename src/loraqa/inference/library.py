"""Answering from collections: the store's collections as the Answerer opens them, and a
question's retrieved passages planned into windows that remember which passage they read.

The answerer does not care where passages come from: the top passages of a collection become
windows in the same batches as any document's, and the answer's citations are those windows'
provenance carried through (inference/reading.py, `citations`).
"""

from __future__ import annotations

import threading
from pathlib import Path

from loraqa.errors import TooMuchWork
from loraqa.inference.reading import WindowInput, plan_reading
from loraqa.retrieval import Collection, Hit, QueryLimits, Store, open_store


class Library:
    """The collections of one store, opened once each (from any thread)."""

    def __init__(self, store: "str | Path | Store | None" = None, query_limits: QueryLimits | None = None):
        self.store = open_store(store, query_limits) if store is None or isinstance(store, (str, Path)) else store
        self.opened: dict[str, Collection] = {}
        self.lock = threading.Lock()

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

    def retrieve(self, name: str, question: str, k: int, min_score: float = 0.0) -> list[Hit]:
        """The collection's best passages for a question, those scoring above min_score."""
        return [hit for hit in self.open(name).search(question, k) if hit.score > min_score]


def plan_passages(tokenizer, question: str, hits: list[Hit], settings, offsets_cache: dict | None = None,
                  max_windows: int | None = None) -> list[WindowInput]:
    """The windows of every retrieved passage (one each, unless a passage is longer than the
    window), each knowing which passage it reads."""
    inputs: list[WindowInput] = []
    for n, hit in enumerate(hits):
        budget = None if max_windows is None else max_windows - len(inputs)
        if budget is not None and budget <= 0:
            raise TooMuchWork(f"the retrieved passages need more than {max_windows} windows")
        for window in plan_reading(tokenizer, question, hit.text, settings.template, settings.max_source,
                                   settings.overlap, extractive=settings.extractive, title=hit.title,
                                   offsets_cache=offsets_cache, max_windows=budget):
            window.origin = n
            inputs.append(window)
    return inputs
