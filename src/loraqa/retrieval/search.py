"""Searching a collection in one of three modes: lexical (BM25), dense (its passages' vectors) or
hybrid (both, fused), the same in every store.

Hybrid, as chosen by benchmarks/domains.py on the real sets of three domains (clinical papers,
privacy policies, stories; all-MiniLM-L6-v2, passages embedded in parts, passage_parts.py): the
lexical search's best POOL passages are re-scored with the dense side, each side's scores min-max
normalised over those candidates and mixed with the dense side weighing DENSE_WEIGHT; the dense
search's other passages follow (a query whose words the passages never use still finds them).
Reciprocal rank fusion with equal weights, the anchors' default, lost up to 9 points of recall@5
to BM25 alone on the clinical and story sets, where a general-purpose embedder is weak: the dense
side may reorder what the words found, not outvote them. At 0.5 hybrid found 2.1 points more than
lexical alone on average (0.4, the weight before parts: 1.8, and one set below its better side).

A hit's `score` means, in every mode, higher is better: BM25 (lexical), the cosine (dense), the
fused value in [0, 1] (hybrid). What weighs it when choosing an answer among passages
(`retrieval.passage_weight`) is its ratio to the best hit of the same search, which is the same
kind of quantity in every mode (inference/reading.py).
"""

from __future__ import annotations

import numpy as np

from loraqa.errors import UsageError
from loraqa.retrieval.embedders import Embedder, load_embedder
from loraqa.retrieval.filters import Filter
from loraqa.retrieval.snippets import with_snippets
from loraqa.retrieval.store import Collection, Hit, query_terms

MODES = ("lexical", "dense", "hybrid")
POOL = 50  # lexical candidates the dense side re-scores
DENSE_WEIGHT = 0.5  # the dense side's share of a fused score


def default_mode(collection: Collection) -> str:
    return "hybrid" if collection.embedder_info() is not None else "lexical"


def embedder_for(collection: Collection, name: str | None = None, engine: str | None = None) -> Embedder:
    """The model the collection's vectors were made with: by the name it recorded, or `name`
    (another path to the same model), checked by fingerprint."""
    info = collection.embedder_info()
    if info is None:
        raise UsageError(
            f"the collection {collection.name} has no vectors: search it with --mode lexical, or add "
            f"them with `loraqa collection embed {collection.name} --embedder MODEL`"
        )
    return load_embedder(name or info["name"], engine, expect=info["fingerprint"])


def search(
    collection: Collection,
    query: str,
    k: int = 5,
    mode: str | None = None,
    embedder: Embedder | None = None,
    where: Filter | None = None,
) -> list[Hit]:
    """The k best passages for the query (where: only the passages a filter keeps)."""
    mode = mode or default_mode(collection)
    if mode not in MODES:
        raise UsageError(f"unknown search mode {mode!r}; use {', '.join(MODES)}")
    if mode == "lexical":
        return collection.search(query, k, where)
    query_terms(query, collection.query_limits)  # the same limits as a lexical search
    embedder = embedder or embedder_for(collection)
    vector = embedder.embed_queries([query])[0]
    if mode == "dense":
        return with_snippets(collection.nearest(vector, k, where), query)
    lexical = collection.search(query, max(POOL, k), where)
    # the dense side's own hits only follow the lexical candidates: wanted when those are too few
    dense = collection.nearest(vector, max(POOL, k), where) if len(lexical) < k else []
    return fuse(lexical, dense, collection.similarities(vector, [h.passage_id for h in lexical]), k, query)


def _normalised(values: np.ndarray) -> np.ndarray:
    hi, lo = float(values.max()), float(values.min())
    return (values - lo) / (hi - lo) if hi > lo else np.ones_like(values)


def fuse(lexical: list[Hit], dense: list[Hit], cosines: dict[int, float], k: int, query: str = "") -> list[Hit]:
    """Lexical candidates re-scored by (1 - DENSE_WEIGHT) x their normalised BM25 + DENSE_WEIGHT x
    their normalised cosine, best first, then the dense hits not among them."""
    out: list[Hit] = []
    if lexical:
        bm25 = _normalised(np.array([h.score for h in lexical], dtype=np.float64))
        cos = _normalised(np.array([cosines.get(h.passage_id, 0.0) for h in lexical], dtype=np.float64))
        fused = (1 - DENSE_WEIGHT) * bm25 + DENSE_WEIGHT * cos
        for i in np.argsort(-fused, kind="stable"):
            hit = lexical[int(i)]
            hit.score = float(fused[i])
            out.append(hit)
    seen = {h.passage_id for h in out}
    floor = min((h.score for h in out), default=0.0)
    for hit in dense:
        if len(out) >= k:
            break
        if hit.passage_id not in seen:
            hit.score = floor * 0.5  # after every lexical candidate, in the dense order
            out.append(hit)
    return with_snippets(out[:k], query)
