"""Automatic adapter choice: route a question (and its passage) to the adapter whose training domain matches.

A request for adapter `auto` is scored against every adapter's domain profile
(loraqa/domain_profile.py) by cosine similarity, with one query vector for all of them (so the
scores compare), and goes to the best. benchmarks/routing.py
compared this with mean base-encoder embeddings (README): TF-IDF routed as well or better, needs
no model pass, and works the same behind any engine.
"""

from __future__ import annotations

from loraqa.domain_profile import DomainProfile, shared_query, terms

AUTO = "auto"  # the adapter name that means "choose for me"


def route(profiles: dict[str, DomainProfile], question: str, context: str | None) -> tuple[str, float] | None:
    """(adapter, similarity) of the profile most similar to the request, or None when there are none."""
    if not profiles:
        return None
    query = shared_query(list(profiles.values()), terms(f"{question} {context or ''}"))
    scores = {name: p.cosine(query) for name, p in profiles.items()}
    best = max(scores, key=scores.get)
    return best, scores[best]
