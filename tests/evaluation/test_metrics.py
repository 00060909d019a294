"""Answer metrics and `loraqa score`, against values worked out by hand.

Hand computation for tests/fixtures/score_v1*.json (official v1.1 rules):
  v1a "paris." vs Paris                      EM 1  F1 1     (punctuation, case)
  v1b "The Seine River" vs [the Seine, Seine river]  EM 1  F1 1  (best of several references)
  v1c "in the 17th century" vs 17th century  EM 0  F1 0.8   (P 2/3, R 1)
  v1d "zürich" vs Zürich                     EM 1  F1 1     (unicode lower-casing)
  v1e "" vs an apple a day                   EM 0  F1 0     (empty prediction)
  v1f "1000 people" vs 1,000 people          EM 1  F1 1     (punctuation inside numbers)
  v1g "cat dog cat" vs a cat                 EM 0  F1 0.5   (P 1/3, R 1; article dropped)
  => exact_match 4/7 = 57.142857, f1 5.3/7 = 75.714286
ROUGE-L (rouge-score: lower case, every run of characters other than a-z and 0-9 splits words,
no article dropped, F of the longest common subsequence, best reference):
  v1a 1 · v1b [the seine river] vs [the seine] P 2/3 R 1 -> 0.8 (and 0.8 vs [seine river]) ·
  v1c LCS 2 of 4 and 2 -> 2/3 · v1d "zürich" and "Zürich" both [z rich] -> 1 · v1e 0 ·
  v1f [1000 people] vs [1 000 people] LCS 1, P 1/2 R 1/3 -> 0.4 · v1g [cat dog cat] vs [a cat] -> 0.4
  => rouge_l 4.266667/7 = 60.952381
For score_v2*.json (official v2.0 rules):
  v2a Bern/Bern 1,1 · v2b unanswerable, "" 1,1 · v2c unanswerable, "Bern" 0,0 ·
  v2d "capital of switzerland" vs [the capital city, capital] 0, max(0.4, 0.5)=0.5 · v2e Aare, "" 0,0
  => exact 40, f1 50, HasAns 33.333/50 (3), NoAns 50/50 (2)
  ROUGE-L: 1, 1 (no answer, empty), 0, max(1/3, 0.5), 0 => 50
With score_v2_na_prob.json (v2a .1, v2d .3, v2c .6, v2e .8, v2b .9), the v2.0 script's threshold
sweep starts at the 2 no-answer questions right and walks up the no-answer probabilities:
  exact: v2a +1 -> 3 (thresh .1), v2d +0, v2c -1 (said "Bern"), v2e +0, v2b +0  => best_exact 60, thresh 0.1
  f1:    v2a +1 -> 3 (.1), v2d +0.5 -> 3.5 (.3), v2c -1, v2e 0, v2b 0         => best_f1 70, thresh 0.3
"""

from __future__ import annotations

import json

import pytest

from helpers import FIXTURES, run_cli
from loraqa.evaluation.calibration import auroc, na_prob, risk_coverage, score_threshold
from loraqa.evaluation.metrics import extractiveness, normalize_answer, rouge_l, score_one, token_accuracy


def test_normalisation_follows_the_official_rules():
    assert normalize_answer("  The  Eiffel-Tower!! ") == "eiffeltower"
    assert normalize_answer("An apple, a day") == "apple day"
    assert normalize_answer("Théâtre") == "théâtre"
    assert normalize_answer("anthem the") == "anthem"  # 'an' inside a word stays


def test_v1_per_question_scores():
    assert score_one("in the 17th century", ["17th century"], "v1") == (0.0, pytest.approx(0.8))
    assert score_one("cat dog cat", ["a cat"], "v1") == (0.0, pytest.approx(0.5))
    assert score_one("The Seine River", ["the Seine", "Seine river"], "v1") == (1.0, 1.0)


def test_rouge_l_is_rouge_score_s_on_hand_checked_pairs():
    """What a user comparing with published ROUGE-L figures expects: rouge-score's own value."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pairs = [
        ("the Eiffel tower", ["Eiffel tower in Paris"], 4 / 7),  # LCS 2: P 2/3, R 2/4
        ("in the 17th century", ["17th century"], 2 / 3),
        ("cat dog cat", ["a cat"], 0.4),
        ("The Seine River", ["the Seine", "Seine river"], 0.8),  # the best reference
        ("Zürich", ["Zürich"], 1.0),
        ("", ["Bern"], 0.0),
    ]
    for prediction, refs, by_hand in pairs:
        assert rouge_l(prediction, refs) == pytest.approx(by_hand)
        assert rouge_l(prediction, refs) == max(scorer.score(r, prediction)["rougeL"].fmeasure for r in refs)
    assert rouge_l("", []) == 1.0 and rouge_l("Bern", []) == 0.0  # no answer: right only when empty


def test_v2_no_answer_rules():
    assert score_one("", [], "v2") == (1.0, 1.0)
    assert score_one("Bern", [], "v2") == (0.0, 0.0)
    assert score_one("", ["Aare"], "v2") == (0.0, 0.0)


def test_score_v1_matches_hand_values():
    res = run_cli("score", str(FIXTURES / "score_v1.json"), str(FIXTURES / "score_v1_pred.json"))
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert list(out) == ["exact_match", "f1", "rouge_l"]  # the official script's keys, then ROUGE-L
    assert round(out["exact_match"], 4) == round(400 / 7, 4) and round(out["f1"], 4) == round(530 / 7, 4)
    assert out["rouge_l"] == pytest.approx(100 * (1 + 0.8 + 2 / 3 + 1 + 0 + 0.4 + 0.4) / 7)


def test_score_v2_matches_hand_values():
    res = run_cli("score", str(FIXTURES / "score_v2.json"), str(FIXTURES / "score_v2_pred.json"))
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert list(out) == [
        "exact",
        "f1",
        "total",
        "HasAns_exact",
        "HasAns_f1",
        "HasAns_total",
        "NoAns_exact",
        "NoAns_f1",
        "NoAns_total",
        "rouge_l",
    ]
    assert out["rouge_l"] == pytest.approx(50.0)
    assert out["exact"] == 40.0 and out["f1"] == 50.0 and out["total"] == 5
    assert round(out["HasAns_exact"], 4) == 33.3333 and out["HasAns_f1"] == 50.0 and out["HasAns_total"] == 3
    assert out["NoAns_exact"] == 50.0 and out["NoAns_f1"] == 50.0 and out["NoAns_total"] == 2


def test_na_prob_adds_the_official_best_thresholds():
    res = run_cli(
        "score",
        str(FIXTURES / "score_v2.json"),
        str(FIXTURES / "score_v2_pred.json"),
        "--na-prob",
        str(FIXTURES / "score_v2_na_prob.json"),
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["exact"] == 40.0 and out["f1"] == 50.0  # the plain scores do not move
    assert out["best_exact"] == 60.0 and out["best_exact_thresh"] == 0.1
    assert out["best_f1"] == 70.0 and out["best_f1_thresh"] == 0.3


def test_na_prob_must_cover_every_prediction(tmp_path):
    f = tmp_path / "na.json"
    f.write_text(json.dumps({"v2a": 0.1}))
    res = run_cli("score", str(FIXTURES / "score_v2.json"), str(FIXTURES / "score_v2_pred.json"), "--na-prob", str(f))
    assert res.exit_code == 1 and "have no no-answer probability" in res.stderr and "Traceback" not in res.output


def test_confidence_summary_by_hand():
    # right answers outrank wrong ones in 5 of 6 pairs, the sixth a tie (half): AUROC 5.5 / 6
    assert auroc([-0.1, -0.2, -0.5, -0.5, -0.9], [True, True, False, True, False]) == pytest.approx(
        (2 + 2 + 0.5 + 1) / 6
    )
    rc = risk_coverage([-0.1, -0.4, -0.2, -0.9], f1=[1.0, 0.0, 0.5, 0.0], exact=[1, 0, 0, 0])
    assert rc["f1_at_50"] == pytest.approx(75.0)  # the two surest: 1.0 and 0.5
    assert rc["f1_at_100"] == pytest.approx(37.5)
    assert rc["auroc"] == pytest.approx(1.0)  # the only exact answer is the surest
    assert na_prob(-0.0, False) == 0.0 and na_prob(-1.0, True) == 1.0
    # no answer when 1 - exp(score) > t: halfway between the lowest score kept and the highest dropped
    scores = [-0.1, -0.3, -0.5]  # na_prob 0.095, 0.259, 0.393
    assert score_threshold(0.26, scores) == pytest.approx(-0.4) and score_threshold(0.0, scores) == 1.0
    assert score_threshold(1.0, scores) is None and score_threshold(0.5, scores) is None  # nothing withheld


def test_missing_and_unknown_ids_are_counted(tmp_path):
    preds = json.loads((FIXTURES / "score_v1_pred.json").read_text())
    del preds["v1a"], preds["v1b"]
    preds["zzz"] = "stray"
    f = tmp_path / "p.json"
    f.write_text(json.dumps(preds))
    res = run_cli("score", str(FIXTURES / "score_v1.json"), str(f))
    assert res.exit_code == 0
    assert "2 question(s) have no prediction and score 0" in res.stderr
    assert "1 prediction id(s) are not in" in res.stderr
    assert round(json.loads(res.stdout)["exact_match"], 4) == round(200 / 7, 4)  # two fewer right, same total


@pytest.mark.parametrize(
    "content,message",
    [
        ("{not json", "is not valid JSON (line 1"),
        ('["a list"]', "must be a JSON object"),
        ('{"v1a": 3}', "must be a JSON object"),
    ],
)
def test_bad_predictions_file(tmp_path, content, message):
    f = tmp_path / "p.json"
    f.write_text(content)
    res = run_cli("score", str(FIXTURES / "score_v1.json"), str(f))
    assert res.exit_code == 1 and message in res.stderr and "Traceback" not in res.output


def test_data_that_is_not_official_format(tmp_path):
    f = tmp_path / "d.json"
    f.write_text("[]")
    res = run_cli("score", str(f), str(FIXTURES / "score_v1_pred.json"))
    assert res.exit_code == 1 and "not an official-format SQuAD file" in res.stderr


def test_token_accuracy_ignores_padding():
    # 3 real tokens, 2 right; the -100 positions would otherwise count as right or wrong
    assert token_accuracy([[5, 6, 7, 0, 0]], [[5, 6, 9, -100, -100]]) == pytest.approx(2 / 3)


def test_extractiveness_counts_verbatim_answers():
    assert extractiveness(["Paris", "paris", "", "Lyon"], ["Paris is big"] * 4) == pytest.approx(1 / 3)
