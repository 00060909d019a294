"""SQuAD answer metrics, exactly as the official v1.1 and v2.0 evaluation scripts compute them.

Pure Python, no model imports, so `loraqa score` works on any predictions file.
Rewritten rather than imported: the official scripts are standalone files (not packages) and
HF `evaluate`'s squad metric needs a hub download; the logic below follows them line by line.
ROUGE-L, beside them, is Google's `rouge-score` package as it is (its tokenizer included).
"""

from __future__ import annotations

import collections
import re
import string

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s: str) -> str:
    """Lower case, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


# ---------------------------------------------------------------- v1.1


def exact_match_v1(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def f1_v1(prediction: str, truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = collections.Counter(pred) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def best_over_references(fn, prediction: str, truths: list[str]) -> float:
    return max(fn(prediction, t) for t in truths)


# ---------------------------------------------------------------- v2.0


def exact_match_v2(prediction: str, truth: str) -> int:
    return int(normalize_answer(truth) == normalize_answer(prediction))


def f1_v2(prediction: str, truth: str) -> float:
    gold, pred = _tokens(truth), _tokens(prediction)
    common = collections.Counter(gold) & collections.Counter(pred)
    same = sum(common.values())
    if len(gold) == 0 or len(pred) == 0:
        # an unanswerable question: right only when the prediction is empty too
        return float(gold == pred)
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def v2_references(answers: list[str]) -> list[str]:
    gold = [a for a in answers if normalize_answer(a)]
    return gold or [""]  # no answer: the only correct prediction is the empty string


# ---------------------------------------------------------------- ROUGE-L

_ROUGE = None


def rouge_l(prediction: str, answers: list[str]) -> float:
    """ROUGE-L F-measure (0..1) of the prediction against its best reference, by `rouge-score`
    (no stemming). A question without an answer scores 1 for an empty prediction, else 0, as
    SQuAD v2's F1 does."""
    global _ROUGE
    refs = [a for a in answers if normalize_answer(a)]
    if not refs:
        return float(not normalize_answer(prediction))
    if _ROUGE is None:  # imported on first use: rouge-score brings nltk along
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return max(_ROUGE.score(ref, prediction)["rougeL"].fmeasure for ref in refs)


# ---------------------------------------------------------------- per question and totals


def score_one(prediction: str, answers: list[str], version: str) -> tuple[float, float]:
    """(exact, f1) of one prediction, each 0..1, the way the official script of `version` does it."""
    if version == "v2":
        refs = v2_references(answers)
        return float(max(exact_match_v2(prediction, a) for a in refs)), max(f1_v2(prediction, a) for a in refs)
    return best_over_references(exact_match_v1, prediction, answers), best_over_references(f1_v1, prediction, answers)


def squad_summary(items: list[dict], version: str) -> dict:
    """Totals in the official scripts' format (percentages), and ROUGE-L's mean (percent) when
    the items carry it. items: {em, f1, has_answer[, rouge_l]}."""
    n = len(items)
    rouge = (
        {"rouge_l": 100.0 * sum(i["rouge_l"] for i in items) / max(n, 1)}
        if items and all("rouge_l" in i for i in items)
        else {}
    )
    if version != "v2":
        return {
            "exact_match": 100.0 * sum(i["em"] for i in items) / max(n, 1),
            "f1": 100.0 * sum(i["f1"] for i in items) / max(n, 1),
            **rouge,
        }
    out = {
        "exact": 100.0 * sum(i["em"] for i in items) / max(n, 1),
        "f1": 100.0 * sum(i["f1"] for i in items) / max(n, 1),
        "total": n,
    }
    for prefix, want in (("HasAns", True), ("NoAns", False)):
        sub = [i for i in items if i["has_answer"] == want]
        if sub:
            out[f"{prefix}_exact"] = 100.0 * sum(i["em"] for i in sub) / len(sub)
            out[f"{prefix}_f1"] = 100.0 * sum(i["f1"] for i in sub) / len(sub)
            out[f"{prefix}_total"] = len(sub)
    return {**out, **rouge}


def token_accuracy(predicted_ids, label_ids, ignore_index: int = -100) -> float:
    """Teacher-forced next-token accuracy over real label tokens only (padding excluded)."""
    right = total = 0
    for pred_row, label_row in zip(predicted_ids, label_ids):
        for p, label in zip(pred_row, label_row):
            if label == ignore_index:
                continue
            total += 1
            right += int(p == label)
    return right / total if total else 0.0


def extractiveness(predictions: list[str], contexts: list[str]) -> float:
    """Share of non-empty predictions that occur verbatim in their passage."""
    pairs = [(p, c) for p, c in zip(predictions, contexts) if p.strip()]
    return sum(p.strip() in c for p, c in pairs) / len(pairs) if pairs else 0.0
