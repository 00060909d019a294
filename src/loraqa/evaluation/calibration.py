"""Confidence: the no-answer threshold, and how well scores separate right answers from wrong.

Pure Python. `best_thresholds` follows the official SQuAD v2.0 script's `find_best_thresh` line
by line (its --na-prob-file mode): questions sorted by their no-answer probability, the
threshold swept from "abstain on everything" upwards, the first threshold with the highest
score kept. loraqa's answers carry a score (mean log-probability of the output); as a no-answer
probability an answer's is 1 - exp(score), an abstention's is 1.
"""

from __future__ import annotations

import math


def na_prob(score: float | None, no_answer: bool) -> float:
    """The no-answer probability of one of loraqa's answers."""
    if no_answer or score is None:
        return 1.0
    return 1.0 - math.exp(min(score, 0.0))


def score_threshold(na_prob_threshold: float, answer_scores: list[float]) -> float | None:
    """The answer score below which a document gets no answer, equivalent on these answers to
    the official rule "no answer when na_prob > threshold". Set halfway between the lowest score
    still answered and the highest one dropped, so that the rounding of a later run cannot flip
    an answer that sat at the threshold. None: never abstain (also when no answer of these was
    dropped: they gave no evidence for withholding any); 1.0 (above any log-probability): always."""
    kept = [s for s in answer_scores if na_prob(s, False) <= na_prob_threshold]
    dropped = [s for s in answer_scores if na_prob(s, False) > na_prob_threshold]
    if na_prob_threshold >= 1.0 or not dropped:
        return None
    if not kept:
        return 1.0
    return (min(kept) + max(dropped)) / 2


def find_best_thresh(
    preds: dict[str, str], scores: dict[str, float], na_probs: dict[str, float], has_answer: dict[str, bool]
) -> tuple[float, float]:
    """(best score in %, its no-answer probability threshold), as the official v2.0 script computes them."""
    num_no_ans = sum(1 for k in has_answer if not has_answer[k])
    cur_score: float = num_no_ans
    best_score: float = num_no_ans
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_answer[qid]:
            diff = scores[qid]
        else:
            diff = -1 if preds[qid] else 0
        cur_score += diff
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def best_thresholds(
    preds: dict[str, str],
    exact: dict[str, float],
    f1: dict[str, float],
    na_probs: dict[str, float],
    has_answer: dict[str, bool],
) -> dict:
    best_exact, exact_thresh = find_best_thresh(preds, exact, na_probs, has_answer)
    best_f1, f1_thresh = find_best_thresh(preds, f1, na_probs, has_answer)
    return {
        "best_exact": best_exact,
        "best_exact_thresh": exact_thresh,
        "best_f1": best_f1,
        "best_f1_thresh": f1_thresh,
    }


def auroc(scores: list[float], right: list[bool]) -> float | None:
    """Probability that a right answer outscores a wrong one (ties count half); None without both kinds."""
    pos = [s for s, r in zip(scores, right) if r]
    neg = [s for s, r in zip(scores, right) if not r]
    if not pos or not neg:
        return None
    ranked = sorted(scores)
    # average rank of each value (1-based), then the Mann-Whitney U statistic
    ranks: dict[float, float] = {}
    i = 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j] == ranked[i]:
            j += 1
        ranks[ranked[i]] = (i + 1 + j) / 2
        i = j
    u = sum(ranks[s] for s in pos) - len(pos) * (len(pos) + 1) / 2
    return u / (len(pos) * len(neg))


def risk_coverage(
    scores: list[float], f1: list[float], exact: list[float], coverages: tuple[float, ...] = (0.5, 0.8, 1.0)
) -> dict:
    """F1 (in %) when answering only the highest-scored share of the questions, the curve behind
    it, and the AUROC of the score for right (exact) vs wrong answers."""
    order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
    curve = []
    total = 0.0
    for k, i in enumerate(order, 1):
        total += f1[i]
        curve.append((k / len(order), 100.0 * total / k))
    out: dict[str, object] = {}
    for c in coverages:
        k = max(1, math.ceil(c * len(order)))
        out[f"f1_at_{round(100 * c)}"] = curve[k - 1][1] if curve else 0.0
    out["auroc"] = auroc(scores, [e == 1 for e in exact])
    out["curve"] = [[round(c, 4), round(v, 4)] for c, v in curve]
    return out
