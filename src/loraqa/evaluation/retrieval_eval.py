"""`loraqa eval --retrieve`: how well questions are answered without their passage.

The data's contexts go into a collection (or a given one is used); each question is then asked
without its passage. Reported: retrieval recall@1/5/20 and MRR (a hit is a retrieved passage of the
question's own context that holds a gold answer), EM/F1 answering from the retrieved passages
beside EM/F1 from the given passages, and, with some contexts held out of the collection, how
often the adapter rightly abstains on the questions whose context is not there.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass

from loraqa.documents import Document, split_document
from loraqa.evaluation.scoring import score_rows
from loraqa.inference.library import Library
from loraqa.retrieval import Settings, open_store
from loraqa.retrieval.embedders import load_embedder
from loraqa.retrieval.ingest import embedder_info
from loraqa.retrieval.passage_parts import PART_CHARS, embed_passages
from loraqa.retrieval.search import MODES

RECALL_AT = (1, 5, 20)


def build_collection(rows: list[dict], store, name: str, holdout: float, seed: int, embedder=None):
    """A collection of the rows' distinct contexts (with vectors when an embedder is given), a
    share `holdout` of them left out; returns it and the ids of the documents the contexts became
    (None for a held-out one)."""

    contexts = list(dict.fromkeys(r["context"] for r in rows))
    rng = random.Random(seed)
    held = set(rng.sample(contexts, round(holdout * len(contexts)))) if holdout else set()
    collection = store.create(name, Settings())
    if embedder is not None:
        collection.set_embedder(embedder_info(embedder))
    ids = {}
    for n, context in enumerate(contexts):
        title = next(r.get("title") or "" for r in rows if r["context"] == context)
        doc = Document(f"context {n + 1}", title or f"context {n + 1}", context)
        ids[context] = None if context in held else doc.id
        if context not in held:
            passages = split_document(doc, collection.settings.passage_chars, collection.settings.overlap)
            vectors = embed_passages(embedder, [p.text for p in passages], PART_CHARS) if embedder else None
            collection.put(doc, passages, vectors=vectors)
    return collection, ids


def retrieval_metrics(library, name: str, rows: list[dict], doc_ids: dict, mode: str | None = None) -> dict:
    """recall@k and MRR over the answerable questions whose context is in the collection."""
    ranks = []
    for row in rows:
        gold = doc_ids.get(row["context"])
        if gold is None or not row["answers"]["text"]:
            continue
        hits = library.search(name, row["question"], max(RECALL_AT), mode)
        rank = next(
            (
                i
                for i, h in enumerate(hits, 1)
                if h.document == gold and any(a in h.text for a in row["answers"]["text"])
            ),
            None,
        )
        ranks.append(rank)
    n = len(ranks) or 1
    out = {f"recall@{k}": round(100 * sum(1 for r in ranks if r is not None and r <= k) / n, 2) for k in RECALL_AT}
    out["mrr"] = round(sum(1 / r for r in ranks if r is not None) / n, 4)
    out["questions"] = len(ranks)
    return out


@dataclass
class PassageSource:
    """Where the questions' passages are searched for: a collection, or (collection None) a
    temporary one made from the rows' contexts, a `holdout` share of them left out (picked by
    `seed`), with vectors of `embedder` when given."""

    collection: str | None = None
    holdout: float = 0.0
    seed: int = 42
    embedder: str | None = None


def evaluate_retrieval(
    answerer,
    rows: list[dict],
    given: list[dict],
    source: PassageSource,
    batch_size: int = 16,
    threshold: float | None = None,
    mode: str | None = None,
) -> dict:
    """The figures above, for the Answerer's adapter 'adapter'; `given`: the per-question items
    of answering with the passages given. threshold: the calibrated no-answer
    threshold, applied to count abstentions. mode: how the adapter's questions search the
    collection (default: its retrieval.mode); recall is reported for every mode the collection
    supports (`modes`), the top-level figures for the mode answered with."""
    collection, holdout, seed, embedder = source.collection, source.holdout, source.seed, source.embedder
    if collection is None:
        target = open_store(tempfile.mkdtemp(prefix="loraqa-eval-"))
        coll, doc_ids = build_collection(
            rows, target, "eval", holdout, seed, load_embedder(embedder) if embedder else None
        )
        answerer.library = Library(target, embedder=embedder)
        name = "eval"
    else:
        coll = answerer.library.open(collection)
        by_text = {}
        for info in coll.documents():
            doc = coll.document(info.id)
            by_text[doc.text] = doc.id
        doc_ids = {r["context"]: by_text.get(r["context"]) for r in rows}
        name = collection
    if embedder is not None:
        answerer.library.embedder = embedder
    adapter = answerer.adapter("adapter")
    answering = mode or (adapter.settings.mode if adapter is not None else "auto")
    answering = None if answering == "auto" else answering
    modes = list(MODES) if coll.embedder_info() is not None else ["lexical"]
    per_mode = {m: retrieval_metrics(answerer.library, name, rows, doc_ids, m) for m in modes}
    used = answering or ("hybrid" if coll.embedder_info() is not None else "lexical")
    figures = {"collection": name, "mode": used, **per_mode[used], "modes": per_mode}
    answers = answerer.answer(
        [{"question": r["question"], "adapter": "adapter", "collection": name, "mode": answering} for r in rows],
        batch_size=batch_size,
    )

    def abstained(a) -> bool:
        return a.no_answer or (threshold is not None and a.score is not None and a.score < threshold)

    present = [i for i, r in enumerate(rows) if doc_ids.get(r["context"]) is not None]
    _, summary = score_rows(
        [rows[i] for i in present], ["" if abstained(answers[i]) else answers[i].answer for i in present]
    )
    figures.update(
        exact_match=summary["exact_match"],
        f1=summary["f1"],
        given_exact_match=round(100 * sum(given[i]["em"] for i in present) / max(len(present), 1), 2),
        given_f1=round(100 * sum(given[i]["f1"] for i in present) / max(len(present), 1), 2),
        questions_answered_from_the_collection=len(present),
    )
    absent = [i for i, r in enumerate(rows) if doc_ids.get(r["context"]) is None]
    if absent:
        figures["held_out_questions"] = len(absent)
        figures["abstained_when_held_out"] = round(100 * sum(abstained(answers[i]) for i in absent) / len(absent), 2)
    return figures
