"""Dense and hybrid search with a real sentence-embedding model (all-MiniLM-L6-v2, from PyPI),
in both stores. What a user would see go wrong without each: a question in other words than the
document's finding nothing, an exact term lost to fuzzy neighbours, vectors that silently come
from another model, a killed add leaving passages no dense search can reach."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import as_unprivileged, run_cli

DOCS = {
    "asthma.md": "# Ward notes\n\nThe physician prescribed an inhaler because the child was wheezing at night.\n",
    "codes.md": "# Drug codes\n\nThe code XR-7 marks the slow-release tablets; the code QF-2 marks the syrup.\n",
    "canteen.md": "# Canteen\n\nThe canteen serves lentil soup and rye bread on Fridays.\n",
    "parking.md": "# Parking\n\nStaff park behind the east wing; visitors use the multi-storey car park.\n",
}


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    return folder


def add(store, folder, *options):
    res = run_cli("collection", "add", "ward", str(folder), "--store", store, *options)
    assert res.exit_code == 0, res.output
    return res


def search(store, query, mode=None, k=3, *options):
    args = ["collection", "search", "ward", query, "--store", store, "-k", str(k), "--json", *options]
    res = run_cli(*args, *(["--mode", mode] if mode else []))
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in res.stdout.splitlines()]


def test_dense_finds_a_question_in_other_words_and_hybrid_keeps_exact_terms(docs, store_spec, minilm):
    add(store_spec, docs, "--embedder", minilm)
    question = "Which doctor gave a medicine for breathing trouble?"  # no word of the asthma note
    assert all("inhaler" not in h["text"] for h in search(store_spec, question, "lexical"))
    [dense] = search(store_spec, question, "dense", 1)
    assert "inhaler" in dense["text"] and dense["snippet"]
    assert "inhaler" in search(store_spec, question)[0]["text"]  # hybrid is the default with vectors
    assert "XR-7" in search(store_spec, "XR-7", "hybrid", 1)[0]["text"]  # a code only the words know


def test_an_embedder_that_is_not_the_collections_model_is_refused(docs, store_spec, minilm, tmp_path):
    add(store_spec, docs, "--embedder", minilm)
    other = tmp_path / "other-model"
    shutil.copytree(minilm, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-5}))
    res = run_cli("collection", "search", "ward", "soup", "--store", store_spec, "--embedder", str(other))
    assert res.exit_code == 2 and "is not the model this collection's vectors were made with" in res.stderr
    assert "Traceback" not in res.output
    same = tmp_path / "same-model"  # the same files elsewhere: the same model
    shutil.copytree(minilm, same)
    assert (
        run_cli("collection", "search", "ward", "soup", "--store", store_spec, "--embedder", str(same)).exit_code == 0
    )


def test_a_lexical_collection_gets_vectors_later_and_resumes_a_stopped_embedding(docs, store_spec, minilm):
    from loraqa.retrieval import open_store
    from loraqa.retrieval.embedders import load_embedder
    from loraqa.retrieval.ingest import embed_collection

    add(store_spec, docs)
    res = run_cli("collection", "search", "ward", "soup", "--store", store_spec, "--mode", "dense")
    assert res.exit_code == 2 and "has no vectors" in res.stderr and "collection embed" in res.stderr
    res = run_cli("collection", "add", "ward", str(docs), "--store", store_spec, "--embedder", minilm)
    assert res.exit_code == 2 and "collection embed" in res.stderr
    collection = open_store(store_spec).open("ward")

    def stop_after_two(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_collection(collection, load_embedder(minilm), progress=stop_after_two)
    assert len(collection.documents_without_vectors()) == 2  # the two embedded are kept
    res = run_cli("collection", "embed", "ward", "--embedder", minilm, "--store", store_spec)
    assert res.exit_code == 0 and "2 documents embedded" in res.stderr, res.output
    assert collection.documents_without_vectors() == []
    question = "Which doctor gave a medicine for breathing trouble?"
    assert "inhaler" in search(store_spec, question, "dense", 1)[0]["text"]


def test_a_killed_add_leaves_no_passage_without_its_vector(tmp_path, store_spec, minilm):
    from loraqa.retrieval import open_store

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(60):
        (folder / f"note{i:02d}.txt").write_text(
            "\n\n".join(
                f"Note {i}, part {j}: bed {i} had dose {j} of drug {i * 7 % 13} at {j} o'clock." for j in range(12)
            )
        )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loraqa",
            "collection",
            "add",
            "many",
            str(folder),
            "--store",
            store_spec,
            "--passage-chars",
            "200",
            "--overlap",
            "40",
            "--embedder",
            minilm,
            "--set",
            "documents.batch_passages=30",
        ],  # PostgreSQL: a few notes a transaction
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if open_store(store_spec).open("many").counts()[0] >= 5:
                break
        except Exception:  # noqa: BLE001 - the collection is being made
            pass
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    collection = open_store(store_spec).open("many")
    assert 5 <= collection.counts()[0] < 60, "the kill came too late to test anything"
    assert collection.documents_without_vectors() == []


def test_a_store_made_before_vectors_still_opens_searches_and_gets_them(docs, tmp_path, minilm):
    import sqlite3

    store = str(tmp_path / "store")
    add(store, docs)
    db = sqlite3.connect(f"{store}/ward.sqlite")
    db.execute("DROP TABLE vectors")  # what a store written before vectors has
    db.commit()
    db.close()
    assert "soup" in search(store, "lentil soup", None, 1)[0]["text"]
    res = run_cli("collection", "embed", "ward", "--embedder", minilm, "--store", store)
    assert res.exit_code == 0, res.output
    assert "inhaler" in search(store, "Which doctor gave a medicine for breathing trouble?", "dense", 1)[0]["text"]


def test_a_read_only_store_is_searched_densely(docs, minilm):
    import tempfile
    from pathlib import Path

    from loraqa.retrieval import open_store
    from loraqa.retrieval.embedders import load_embedder

    root = Path(tempfile.mkdtemp(prefix="loraqa-open-"))
    try:
        root.chmod(0o755)
        store = root / "store"
        add(str(store), docs, "--embedder", minilm)
        # the question is embedded here: an encoder's threads do not survive the fork into nobody's process
        vector = load_embedder(minilm).embed(["Which doctor gave a medicine for breathing trouble?"])[0]
        for path in [store, *store.iterdir()]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        got = as_unprivileged(lambda: [h.text for h in open_store(store).open("ward").nearest(vector, 1)])
        assert "inhaler" in got[0]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_every_engine_embeds_alike_and_the_default_search_needs_no_torch(docs, tmp_path, minilm):
    """int8 engines whose vectors drifted from the model's (per-tensor scales: a cosine of 0.94)
    would find other passages than the fp32 model a collection was embedded with."""
    from loraqa.retrieval.embedders import default_engine, load_embedder

    assert default_engine() == "onnxruntime"  # the fastest, where installed
    texts = [*DOCS.values(), "Which doctor gave a medicine for breathing trouble?", "soup"]
    fp32 = load_embedder(minilm, "sentence-transformers").embed(texts)
    for engine in ("onnxruntime", "ctranslate2"):
        assert float((load_embedder(minilm, engine).embed(texts) * fp32).sum(1).min()) > 0.99, engine
    onnx = load_embedder(minilm, "onnxruntime")
    # a query runs the fp32 model: its vector is the model's own
    assert float((onnx.embed_queries(texts) * fp32).sum(1).min()) > 0.9999
    # a passage gets the same vector whatever it is embedded with (its activations scaled alone)
    assert (onnx.embed(texts[:1]) == onnx.embed(texts)[:1]).all()
    store = str(tmp_path / "store")
    add(store, docs, "--embedder", minilm)
    script = (
        "import sys, json; from loraqa.inference.library import Library; "
        f"hits = Library({store!r}).search('ward', 'medicine for breathing trouble', 1, 'hybrid'); "
        "print(json.dumps([hits[0].text, 'torch' in sys.modules, 'transformers' in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env={**os.environ}
    )
    text, torch_loaded, transformers_loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "inhaler" in text and not torch_loaded and not transformers_loaded, out.stderr


def test_passages_embedded_together_each_keep_their_own_vector(tmp_path, minilm, monkeypatch):
    """An add reads files ahead and embeds their passages in one call (so does `collection
    embed`): a vector that landed on a neighbour's passage would make dense search return the
    wrong passage."""
    from loraqa.retrieval import Settings, ingest, open_store
    from loraqa.retrieval.embedders import load_embedder

    monkeypatch.setattr(ingest, "EMBED_AHEAD", 7)  # groups of two files or so, and ends inside one
    # (int8 activations are scaled per batch, so a text's vector moves slightly with its batch:
    # the check is that each passage's nearest vector is its own, not that it is bit-identical)
    folder = tmp_path / "long"
    folder.mkdir()
    notes = iter(
        [
            "The night nurse counts the morphine ampoules twice.",
            "Visiting hours end at eight in the evening.",
            "A fire drill is held on the first Monday of each month.",
            "The lift to the maternity ward is out of order.",
            "Oxygen cylinders are stored in the locked cage by the loading bay.",
            "Porters wear green badges and carry radios.",
            "The chapel on the ground floor is open all night.",
            "Blood samples go to the laboratory by pneumatic tube.",
            "Wheelchairs are returned to the bay beside reception.",
            "The pharmacy closes at noon on Saturdays.",
            "Infection control audits the hand gel dispensers weekly.",
            "Patients' valuables are logged in a bound register.",
        ]
    )
    for name, text in DOCS.items():  # several passages each, none alike
        (folder / name).write_text(text + "".join(f"\n{next(notes)}\n" for _ in range(3)))
    store = open_store(tmp_path / "store")
    embedder = load_embedder(minilm)
    ingest.add_paths(store, "ahead", [str(folder)], Settings(passage_chars=100, overlap=0), embedder=minilm)
    ingest.add_paths(store, "later", [str(folder)], Settings(passage_chars=100, overlap=0))
    ingest.embed_collection(store.open("later"), embedder)
    for name in ("ahead", "later"):
        collection = store.open(name)
        passages = [p for d in collection.documents() for p in collection.passages(d.id)]
        assert len(passages) > 3 * len(DOCS)
        for passage, vector in zip(passages, embedder.embed([p.text for p in passages])):
            [hit] = collection.nearest(vector, 1)
            assert hit.text == passage.text and hit.score > 0.98, (name, passage.text)


def test_a_cpu_without_vnni_gets_7_bit_weights_that_still_embed_like_the_model(minilm, tmp_path, monkeypatch):
    """On x86 without VNNI (AVX2 only) full 8-bit weights saturate onnxruntime's int8 sums: there
    the export uses 7 bits, in a cache folder of its own (a VNNI machine's export is not reused)."""
    from loraqa.retrieval import embedders
    from loraqa.retrieval.embedders import load_embedder

    monkeypatch.setenv("LORAQA_CPU_VNNI", "0")
    monkeypatch.setenv("LORAQA_EMBEDDER_CACHE", str(tmp_path))
    monkeypatch.setattr(embedders, "_LOADED", {})
    texts = [*DOCS.values(), "Which doctor gave a medicine for breathing trouble?"]
    seven = load_embedder(minilm, "onnxruntime").embed(texts)
    fp32 = load_embedder(minilm, "sentence-transformers").embed(texts)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith("-7bit")]
    assert float((seven * fp32).sum(1).min()) > 0.99


def test_a_model_onnxruntime_cannot_export_is_one_line_naming_the_other_engines(docs, tmp_path, minilm):
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(f"{minilm}/tokenizer.json", broken)
    (broken / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))  # no weights
    res = run_cli(
        "collection", "add", "ward", str(docs), "--store", str(tmp_path / "store"),
        "--embedder", str(broken), "--embedder-engine", "onnxruntime",
    )  # fmt: skip
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "onnxruntime cannot take the embedder" in res.output and "--embedder-engine ctranslate2" in res.output
    assert not list(Path(os.environ["LORAQA_EMBEDDER_CACHE"]).glob("*.tmp*"))  # nothing half-written kept


def test_evaluate_reports_each_mode_whole_and_per_document(docs, tmp_path, store_spec, minilm):
    add(store_spec, docs, "--embedder", minilm)
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        "\n".join(
            json.dumps(q)
            for q in [
                {
                    "question": "Which doctor gave a medicine for breathing trouble?",
                    "answers": ["inhaler"],
                    "document": "asthma.md",
                },
                {"question": "What does XR-7 mark?", "answers": ["slow-release tablets"], "document": "Drug codes"},
                {"question": "What is served on Fridays?", "answers": ["lentil soup"]},
            ]
        )
        + "\n"
    )
    res = run_cli("collection", "evaluate", "ward", "--questions", str(questions), "--store", store_spec, "--json")
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert set(got) == {"lexical", "dense", "hybrid"} and all(m["questions"] == 3 for m in got.values())
    assert got["lexical"]["recall@5"] < 100 and got["dense"]["recall@5"] == 100 and got["hybrid"]["recall@5"] == 100
    res = run_cli(
        "collection",
        "evaluate",
        "ward",
        "--questions",
        str(questions),
        "--store",
        store_spec,
        "--per-document",
        "--mode",
        "lexical",
    )
    assert res.exit_code == 2 and "every question must name one" in res.stderr
    questions.write_text(json.dumps({"question": "q?", "answers": ["x"], "document": "nowhere.md"}) + "\n")
    res = run_cli("collection", "evaluate", "ward", "--questions", str(questions), "--store", store_spec)
    assert res.exit_code == 2 and "'nowhere.md' is in no document of ward" in res.stderr


def test_evaluate_reads_squad_and_counts_a_hit_at_the_answers_offsets(tmp_path):
    store = str(tmp_path / "store")
    context = "Soup is served at noon. The soup of the day is lentil."
    squad = {
        "data": [
            {
                "title": "Canteen",
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {
                                "id": "1",
                                "question": "What is the soup of the day?",
                                "answers": [{"text": "lentil", "answer_start": context.index("lentil")}],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    path = tmp_path / "canteen.json"
    path.write_text(json.dumps(squad))
    assert run_cli("collection", "add", "c", str(path), "--store", store).exit_code == 0
    res = run_cli("collection", "evaluate", "c", "--questions", str(path), "--store", store, "--json", "--per-document")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {
        "lexical": {"recall@1": 100.0, "recall@5": 100.0, "recall@20": 100.0, "mrr": 1.0, "questions": 1}
    }


def test_fusion_lets_the_dense_side_reorder_what_the_words_found():
    from loraqa.retrieval.search import fuse
    from loraqa.retrieval.store import Hit

    def hit(pid, score):
        return Hit("d", "t", "s", None, 0, 1, score, f"passage {pid}", passage_id=pid)

    lexical = [hit(1, 10.0), hit(2, 9.5), hit(3, 2.0)]
    dense = [hit(4, 0.9), hit(2, 0.8)]
    order = [h.passage_id for h in fuse(lexical, dense, {1: 0.1, 2: 0.8, 3: 0.2}, 4)]
    # 2: nearly the best BM25 and the best cosine overtakes 1; 3 stays behind; 4 (dense only) comes last
    assert order == [2, 1, 3, 4]


def test_filters_keep_a_search_within_part_of_the_collection_in_every_mode(tmp_path, store_spec, minilm):
    from documents_made_here import write_pdf

    folder = tmp_path / "policies"
    folder.mkdir()
    rows = [
        {
            "id": "acme-privacy",
            "title": "Acme privacy",
            "text": "Acme keeps your data for two years.",
            "company": "acme",
        },
        {
            "id": "zeta-privacy",
            "title": "Zeta privacy",
            "text": "Zeta keeps your data for five years.",
            "company": "zeta",
        },
    ]
    (folder / "acme.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    write_pdf(
        folder / "handbook.pdf",
        ["Data is kept for ten years in the archive.", "Data of visitors is kept for one month."],
    )
    assert run_cli("collection", "add", "p", str(folder), "--store", store_spec, "--embedder", minilm).exit_code == 0

    def found(mode, *where):
        args = [
            "collection",
            "search",
            "p",
            "How long is data kept?",
            "--store",
            store_spec,
            "-k",
            "10",
            "--json",
            "--mode",
            mode,
        ]
        res = run_cli(*args, *[a for w in where for a in ("--where", w)])
        assert res.exit_code == 0, res.output
        return [json.loads(line)["text"] for line in res.stdout.splitlines()]

    for mode in ("lexical", "dense", "hybrid"):
        assert len(found(mode)) == 4
        assert found(mode, "meta.company=zeta") == ["Zeta keeps your data for five years."]
        assert found(mode, "document=acme-privacy") == ["Acme keeps your data for two years."]
        assert found(mode, "title=Zeta*") == ["Zeta keeps your data for five years."]
        assert found(mode, f"source={folder}/handbook.pdf", "page=2") == ["Data of visitors is kept for one month."]
        assert found(mode, "source=*.pdf", "page=1-2") and all("Data" in t for t in found(mode, "source=*.pdf"))
    res = run_cli("collection", "search", "p", "data", "--store", store_spec, "--where", "colour=red")
    assert res.exit_code == 2 and "unknown filter field 'colour'" in res.stderr and "Traceback" not in res.output
    res = run_cli("collection", "search", "p", "data", "--store", store_spec, "--where", "page=two")
    assert res.exit_code == 2 and "give a page N or a range N-M" in res.stderr


def test_the_http_search_takes_a_mode_and_filters(docs, tmp_path, minilm, two_adapters):
    from helpers import local_client
    from loraqa.inference.answerer import Answerer
    from loraqa.inference.library import CollectionSettings
    from loraqa.serving.app import create_app

    store = str(tmp_path / "store")
    add(store, docs, "--embedder", minilm)
    asker = Answerer(
        {"answers": str(two_adapters["answers"])},
        dtype="fp32",
        collections=CollectionSettings(store, {"answers": "ward"}),
    )
    with local_client(create_app(asker)) as client:
        question = "Which doctor gave a medicine for breathing trouble?"
        dense = client.post("/v1/search", json={"query": question, "collection": "ward", "mode": "dense", "k": 1})
        assert dense.status_code == 200 and "inhaler" in dense.json()["results"][0]["text"]
        lexical = client.post("/v1/search", json={"query": question, "collection": "ward", "mode": "lexical"})
        assert all("inhaler" not in r["text"] for r in lexical.json()["results"])
        only = client.post("/v1/search", json={"query": "code", "collection": "ward", "filters": {"title": "Canteen"}})
        assert only.status_code == 200 and {r["title"] for r in only.json()["results"]} <= {"Canteen"}
        bad = client.post("/v1/search", json={"query": "soup", "collection": "ward", "filters": {"colour": "red"}})
        assert bad.status_code == 400 and "unknown filter field" in bad.text
        answered = client.post(
            "/v1/answer",
            json={"question": question, "adapter": "answers", "mode": "dense", "filters": {"title": "Ward notes"}},
        )
        # what the tiny adapter answers (or whether it abstains) is its own affair; what it read is the filter's
        assert answered.status_code == 200 and {c["title"] for c in answered.json()["citations"]} <= {"Ward notes"}
        refused = client.post(
            "/v1/answer", json={"question": question, "adapter": "answers", "filters": {"colour": "red"}}
        )
        assert refused.status_code == 400 and "unknown filter field" in refused.text
        within = client.post(
            "/v1/search",
            json={"query": question, "collection": "ward", "mode": "dense", "filters": {"title": "Ward notes"}, "k": 3},
        )
        assert [r["title"] for r in within.json()["results"]] == ["Ward notes"]


LONG_NOTE = [  # paragraphs of one ward's notes, the question's in the middle
    "The canteen serves lentil soup and rye bread on Fridays. Staff park behind the east wing; "
    "visitors use the multi-storey car park. A fire drill is held on the first Monday of each month.",
    "The physician prescribed an inhaler because the child was wheezing at night. The doctor said "
    "the breathing trouble was asthma and gave the parents a plan for the next attack.",
    "Porters wear green badges and carry radios on every shift. The chapel on the ground floor is "
    "open all night for families, and wheelchairs are returned to the bay beside reception.",
    "The pharmacy closes at noon on Saturdays and opens late on Mondays. The lift to the maternity "
    "ward is out of order until the engineers return from the other site.",
]


def test_a_long_passage_scores_as_its_best_part_in_both_stores(tmp_path, store_spec, minilm):
    """One vector for a 1,000-character passage blurs the sentence a question asks about (dense
    recall@5 on real clinical papers: 52 with one vector a passage, 60 with parts): a long
    passage is embedded in parts and scores as its best part, in a plain, a filtered and a
    hybrid search (the candidates' cosines), in both stores."""
    from loraqa.retrieval import Settings, ingest, open_store
    from loraqa.retrieval.embedders import load_embedder
    from loraqa.retrieval.filters import Filter
    from loraqa.retrieval.passage_parts import PART_CHARS, parts

    text = "\n\n".join(LONG_NOTE)
    assert PART_CHARS < len(text) < 1000
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "long.md").write_text(text + "\n")
    (folder / "codes.md").write_text(DOCS["codes.md"])
    store = open_store(store_spec)
    ingest.add_paths(store, "ward", [str(folder)], Settings(passage_chars=1000, overlap=0), embedder=minilm)
    collection = store.open("ward")
    embedder = load_embedder(minilm)
    question = embedder.embed_queries(["Which doctor gave a medicine for breathing trouble?"])[0]
    pieces = parts(text, PART_CHARS)
    assert len(pieces) >= 2 and " ".join(pieces).split() == text.split()
    best = max(float(v @ question) for v in embedder.embed(pieces))
    whole = float(embedder.embed([text])[0] @ question)
    assert best > whole + 0.05  # what parts are for
    [hit] = collection.nearest(question, 1)
    assert hit.text == text and hit.score == pytest.approx(best, abs=3e-3)
    [hit] = collection.nearest(question, 1, Filter.parse(["source=*long*"]))  # PostgreSQL's exact scan
    assert hit.text == text and hit.score == pytest.approx(best, abs=3e-3)
    assert collection.similarities(question, [hit.passage_id])[hit.passage_id] == pytest.approx(best, abs=3e-3)


def test_a_collection_embedded_before_parts_keeps_one_vector_a_passage_until_replaced(tmp_path, store_spec, minilm):
    """A collection whose vectors were made one a passage (and, in PostgreSQL, whose vectors'
    table has no `part`) still searches, takes new files with vectors of the same kind (a mix
    would score old and new passages unlike), and gets parts from `collection embed --replace`."""
    import sqlite3

    from loraqa.retrieval import open_store
    from loraqa.retrieval.embedders import load_embedder
    from loraqa.retrieval.passage_parts import PART_CHARS

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "codes.md").write_text(DOCS["codes.md"])
    add(store_spec, folder, "--embedder", minilm)
    if store_spec.startswith("postgresql"):
        import psycopg

        with psycopg.connect(store_spec, autocommit=True) as db:  # as the store wrote it before parts
            key = db.execute(
                "SELECT conname FROM pg_constraint WHERE conrelid = 'loraqa_vectors_384'::regclass AND contype = 'p'"
            ).fetchone()[0]
            db.execute(f'ALTER TABLE loraqa_vectors_384 DROP CONSTRAINT "{key}", DROP COLUMN part')
            db.execute("ALTER TABLE loraqa_vectors_384 ADD PRIMARY KEY (passage_id)")
            db.execute("UPDATE loraqa_embedders SET info = info - 'parts'")
    else:
        with sqlite3.connect(f"{store_spec}/ward.sqlite") as db:
            db.execute("UPDATE settings SET value = json_remove(value, '$.parts') WHERE key = 'embedder'")
    (folder / "long.md").write_text("\n\n".join(LONG_NOTE) + "\n")
    add(store_spec, folder)
    question = "Which doctor gave a medicine for breathing trouble?"
    assert "inhaler" in search(store_spec, question, "dense", 1)[0]["text"]
    collection = open_store(store_spec).open("ward")
    vector = load_embedder(minilm).embed_queries([question])[0]
    [long_id] = [h.passage_id for h in collection.nearest(vector, 1)]
    whole = load_embedder(minilm).embed(["\n\n".join(LONG_NOTE)])[0]
    assert collection.similarities(vector, [long_id])[long_id] == pytest.approx(float(whole @ vector), abs=3e-3)
    res = run_cli("collection", "embed", "ward", "--embedder", minilm, "--replace", "--store", store_spec)
    assert res.exit_code == 0, res.output
    collection = open_store(store_spec).open("ward")
    assert collection.embedder_info()["parts"] == PART_CHARS
    assert collection.similarities(vector, [long_id])[long_id] > float(whole @ vector) + 0.05


def test_vectors_of_the_wrong_shape_are_refused_in_one_line_not_misplaced():
    """A caller's vectors of another dimension or count would land on the wrong passages, or fail
    deep in NumPy: they are one clear error naming the shapes."""
    import numpy as np

    from loraqa.errors import UsageError
    from loraqa.retrieval.passage_parts import per_passage

    assert [v.shape for v in per_passage([np.ones(4), np.ones((3, 4))], 2, 4)] == [(1, 4), (3, 4)]
    for wrong, count in (([np.ones((3, 100))], 1), (np.ones((2, 4)), 3), ([np.ones((0, 4))], 1)):
        with pytest.raises(UsageError, match=r"for .* passages of a 4-dimension collection"):
            per_passage(wrong, count, 4)
