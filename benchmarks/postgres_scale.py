"""The PostgreSQL store on a real set (as benchmarks/domains.py writes it): ingestion without
embeddings (passages/s; a transaction per document against loraqa's batches of whole documents,
in the same run), then the collection grown to --scale passages and p50/p95 query latency
in each mode, the query's embedding included.

The real documents are added as `collection add` adds them (lexical only: the ingestion figure);
their vectors are then made with the real model (`collection embed`); the extra passages are
sentences of the real passages drawn at random and recombined (words keep their real
frequencies), with random unit vectors of the model's dimension (embedding 100,000 passages takes
an hour on 2 cores): latency, not recall, is what they measure.

    .ci/with-postgres sh -c '.venv/bin/python benchmarks/postgres_scale.py --postgres "$LORAQA_TEST_POSTGRES" \\
        --docs WORKDIR/clinical/docs --questions WORKDIR/clinical/questions.jsonl'
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from domains import MODES, grow, latencies, model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--postgres", required=True, help="postgresql://... (a database where CREATE EXTENSION vector works)"
    )
    parser.add_argument("--docs", required=True, help="a folder of a set's documents (benchmarks/domains.py --workdir)")
    parser.add_argument("--questions", required=True, help="its questions (JSONL with 'question')")
    parser.add_argument("--embedder", help="a sentence-transformers folder (default: all-MiniLM-L6-v2 from PyPI)")
    parser.add_argument("--scale", type=int, default=100_000, help="passages to grow the collection to (0: skip)")
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()

    from types import SimpleNamespace

    from loraqa.config.schema import DocumentsConfig
    from loraqa.inference.library import Library
    from loraqa.retrieval import Settings, open_store
    from loraqa.retrieval.embedders import load_embedder
    from loraqa.retrieval.ingest import add_paths, embed_collection

    model = load_embedder(model_path(args.embedder))
    store = open_store(args.postgres)
    name = f"bench{int(time.time())}"
    out = {}
    # a transaction per document (the baseline), then loraqa's default batches of whole documents
    for label, batch, collection_name in (
        ("one_document_per_transaction", 1, name + "_single"),
        ("ingest_lexical", DocumentsConfig().batch_passages, name),
    ):
        started = time.perf_counter()
        report = add_paths(store, collection_name, [args.docs], Settings(), DocumentsConfig(batch_passages=batch))
        seconds = time.perf_counter() - started
        out[label] = {
            "documents": report.added,
            "passages": report.passages,
            "seconds": round(seconds, 2),
            "passages_per_s": round(report.passages / seconds, 1),
        }
        print(
            f"ingestion without embeddings, {label.replace('_', ' ')}: {report.passages} passages of "
            f"{report.added} documents in {seconds:.2f} s ({report.passages / seconds:.0f} passages/s)",
            flush=True,
        )
    store.drop(name + "_single")
    collection = store.open(name)
    embed_collection(collection, model)
    questions = [
        SimpleNamespace(text=json.loads(line)["question"])
        for line in Path(args.questions).read_text(encoding="utf-8").splitlines()
    ]
    random.Random(0).shuffle(questions)
    library = Library(store)
    out["real"] = {"passages": collection.counts()[1]}
    for mode in MODES:
        p50, p95 = latencies(library, name, questions, mode, args.queries)
        out["real"][mode] = {"p50_ms": p50, "p95_ms": p95}
    print(
        f"at {out['real']['passages']:,} passages: "
        + ", ".join(f"{m} {out['real'][m]['p50_ms']}/{out['real'][m]['p95_ms']}" for m in MODES),
        flush=True,
    )
    if args.scale:
        started = time.perf_counter()
        have = grow(collection, args.scale)
        print(
            f"grown to {have:,} passages in {time.perf_counter() - started:.0f} s (with vectors and the HNSW index)",
            flush=True,
        )
        out["scaled"] = {"passages": have}
        for mode in MODES:
            p50, p95 = latencies(library, name, questions, mode, args.queries)
            out["scaled"][mode] = {"p50_ms": p50, "p95_ms": p95}
        print(
            f"at {have:,} passages: "
            + ", ".join(f"{m} {out['scaled'][m]['p50_ms']}/{out['scaled'][m]['p95_ms']}" for m in MODES),
            flush=True,
        )
    store.drop(name)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
