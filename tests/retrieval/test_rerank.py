"""Cross-encoder reranking (retrieval.rerank_model, --rerank-model), tested for its mechanism
with a small random cross-encoder made here (no real one can be downloaded): what a user would
see go wrong is passages kept in the search's order instead of the cross-encoder's, a passage
from beyond the candidates showing up, or an answer that ignores the setting."""

from __future__ import annotations

import json

import pytest

from helpers import run_cli

NOTES = {
    f"note{i}.txt": f"Ward note {i}: the patient in bed {i} was given dose {i} of the drug at {i} o'clock."
    for i in range(8)
}


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory, minilm):
    """A one-layer BERT cross-encoder with random weights and MiniLM's WordPiece vocabulary."""
    pytest.importorskip("sentence_transformers")
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("cross-encoder")
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
    )
    import torch

    torch.manual_seed(1)  # the same weights whatever ran before (the tests below need it to disagree with BM25)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("notes")
    for name, text in NOTES.items():
        (folder / name).write_text(text)
    where = str(tmp_path_factory.mktemp("store"))
    res = run_cli("collection", "add", "ward", str(folder), "--store", where)
    assert res.exit_code == 0, res.output
    return where


def search(store, *options):
    res = run_cli("collection", "search", "ward", "patient drug dose bed", "--store", store, "--json", *options)
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in res.stdout.splitlines()]


def test_the_kept_passages_are_the_cross_encoders_best_among_the_candidates(store, cross_encoder):
    from sentence_transformers import CrossEncoder

    candidates = search(store, "-k", "5")
    got = search(store, "-k", "2", "--rerank-model", cross_encoder, "--rerank-candidates", "5")
    model = CrossEncoder(cross_encoder, device="cpu")
    scores = model.predict([("patient drug dose bed", c["text"]) for c in candidates])
    best = sorted(zip(scores, candidates), key=lambda pair: -pair[0])[:2]
    assert [g["source"] for g in got] == [c["source"] for _, c in best]
    assert [g["score"] for g in got] == pytest.approx([float(s) for s, _ in best], abs=1e-5)
    assert all(0 < g["score"] < 1 for g in got)  # a probability: higher is better, as in every mode


def test_no_passage_from_beyond_the_candidates_is_kept(store, cross_encoder):
    lexical = [h["source"] for h in search(store, "-k", "8")]
    got = [h["source"] for h in search(store, "-k", "3", "--rerank-model", cross_encoder, "--rerank-candidates", "3")]
    assert sorted(got) == sorted(lexical[:3])


def test_an_adapter_configured_with_a_cross_encoder_answers_from_the_passages_it_keeps(
    store, cross_encoder, two_adapters, tmp_path
):
    """retrieval.rerank_model in an adapter's config: its answers cite only passages the
    cross-encoder kept (top_k 1 of 8 candidates, where the plain search's best is another)."""
    import shutil

    import yaml

    from loraqa.inference.answerer import Answerer
    from loraqa.inference.library import CollectionSettings, Library

    adapter = tmp_path / "run"  # the run that trained 'answers', its config naming the cross-encoder
    shutil.copytree(two_adapters["answers"], adapter, ignore=shutil.ignore_patterns("checkpoint-*"))
    config = yaml.safe_load((adapter / "config.yaml").read_text())
    config.setdefault("retrieval", {}).update(top_k=1, rerank_model=cross_encoder, rerank_candidates=8)
    (adapter / "config.yaml").write_text(yaml.safe_dump(config))
    question = "patient drug dose bed"
    kept = Library(store).retrieve("ward", question, 1, rerank=(cross_encoder, 8))
    plain = Library(store).retrieve("ward", question, 1)
    assert kept[0].source != plain[0].source, "the random cross-encoder agrees with BM25: nothing is tested"
    answerer = Answerer({"reranking": str(adapter)}, collections=CollectionSettings(store, {"reranking": "ward"}))
    reading = answerer.plan({"question": question, "adapter": "reranking"})
    assert [hit.source for hit in reading.hits] == [kept[0].source]  # the one passage it reads
