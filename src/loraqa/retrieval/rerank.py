"""Cross-encoder reranking (`retrieval.rerank_model`): the search's best candidates re-scored by a
model that reads the question and each passage together, the best k kept.

A cross-encoder reads every (question, passage) pair through a transformer, so it costs a model
pass per candidate (about 20 per question by default) where the search cost none: it is for
where its gain is measured on the user's own questions. sentence-transformers' CrossEncoder runs
it (its activation makes a one-label model's score a probability in (0, 1), so a hit's score
keeps meaning "higher is better" and its ratio to the best one weighs the answer choice as in
every search mode).
"""

from __future__ import annotations

import threading

from loraqa import optional
from loraqa.errors import LoraqaError
from loraqa.retrieval.embedders import model_folder
from loraqa.retrieval.store import Hit

_LOADED: dict[str, Reranker] = {}
_LOCK = threading.Lock()


class Reranker:
    def __init__(self, name: str):
        optional.check("sentence_transformers", "reranking with a cross-encoder (retrieval.rerank_model)")
        from sentence_transformers import CrossEncoder

        folder = model_folder(name, "cross-encoder", "retrieval.rerank_model (or --rerank-model)")
        try:
            self.model = CrossEncoder(str(folder), device="cpu")
        except Exception as exc:  # noqa: BLE001 - loading raises many types for a folder that is no cross-encoder
            raise LoraqaError(
                f"{name} cannot be loaded as a cross-encoder ({str(exc).splitlines()[0][:120]}); "
                "retrieval.rerank_model takes a sentence-transformers CrossEncoder folder"
            ) from None
        self.name = name
        self.lock = threading.Lock()  # one model pass at a time

    def scores(self, query: str, texts: list[str]) -> list[float]:
        if not texts:
            return []
        with self.lock:
            return [float(s) for s in self.model.predict([(query, t) for t in texts], show_progress_bar=False)]

    def rerank(self, query: str, hits: list[Hit], k: int) -> list[Hit]:
        """The k hits the cross-encoder scores best, best first, each with its score."""
        for hit, score in zip(hits, self.scores(query, [h.text for h in hits])):
            hit.score = score
        return sorted(hits, key=lambda h: -h.score)[:k]


def reranker(name: str) -> Reranker:
    """The cross-encoder `name`, loaded once per process."""
    with _LOCK:
        if name not in _LOADED:
            _LOADED[name] = Reranker(name)
        return _LOADED[name]
