"""Automatic adapter choice: route a question (and its passage) to the adapter whose training domain matches.

At training time a small domain profile is written beside the adapter (loraqa_domain.json):
where its training data came from, how many questions, the run name, and a TF-IDF centroid of
its training questions and passages (the top terms with their weights, and their IDF). A request
for adapter `auto` is scored against every profile by cosine similarity and goes to the best.
benchmarks/routing.py compared this with mean base-encoder embeddings (README): TF-IDF routed as
well or better, needs no model pass, and works the same behind any engine.

Written by hand rather than with scikit-learn's TfidfVectorizer: a profile must load without
pickle (loraqa refuses pickle files), so it is stored as JSON term weights, and applying it is one
sparse dot product; what remains of TF-IDF is a dozen lines.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

DOMAIN_PROFILE_NAME = "loraqa_domain.json"
AUTO = "auto"  # the adapter name that means "choose for me"
_WORD = re.compile(r"[^\W\d_]{2,}|\d+", re.UNICODE)
TOP_TERMS = 2000


def terms(text: str) -> Counter:
    return Counter(w.lower() for w in _WORD.findall(text))


def _tfidf(counts: Counter, idf: dict[str, float], unknown_idf: float) -> dict[str, float]:
    """Sublinear term frequency times IDF (terms the profile never saw weigh as the rarest)."""
    return {t: (1.0 + math.log(c)) * idf.get(t, unknown_idf) for t, c in counts.items()}


def _normalised(vec: dict[str, float]) -> dict[str, float]:
    norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
    return {t: v / norm for t, v in vec.items()}


@dataclass
class DomainProfile:
    centroid: dict[str, float]  # unit-length TF-IDF centroid of the training texts (top terms)
    idf: dict[str, float]
    unknown_idf: float
    source: str = ""
    train_questions: int = 0
    run_name: str = ""
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_rows(cls, rows: list[dict], source: str = "", run_name: str = "") -> "DomainProfile":
        """The profile of an adapter's training rows (question and passage of each)."""
        docs = [terms(f"{r['question']} {r.get('context') or ''}") for r in rows]
        df = Counter(t for d in docs for t in d)
        n = len(docs)
        idf = {t: math.log((1 + n) / (1 + c)) + 1.0 for t, c in df.items()}
        unknown = math.log(1 + n) + 1.0
        total: Counter = Counter()
        for d in docs:
            for t, w in _normalised(_tfidf(d, idf, unknown)).items():
                total[t] += w / n
        top = dict(total.most_common(TOP_TERMS))
        return cls(_normalised(top), {t: idf[t] for t in top}, unknown, source, len(rows), run_name)

    def similarity(self, counts: Counter) -> float:
        """Cosine similarity of a text's term counts (`terms(text)`) to the profile, in [0, 1]."""
        query = _normalised(_tfidf(counts, self.idf, self.unknown_idf))
        return sum(w * self.centroid.get(t, 0.0) for t, w in query.items())

    def describe(self) -> str:
        return (f"trained on {self.train_questions} questions from {self.source}"
                + (f" (run {self.run_name})" if self.run_name else ""))

    def to_json(self) -> str:
        return json.dumps({"source": self.source, "train_questions": self.train_questions, "run_name": self.run_name,
                           "tfidf": {"centroid": self.centroid, "idf": self.idf, "unknown_idf": self.unknown_idf},
                           **self.extra}, ensure_ascii=False)

    @classmethod
    def read(cls, adapter_dir: Path) -> "DomainProfile | None":
        path = Path(adapter_dir) / DOMAIN_PROFILE_NAME
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            t = data.pop("tfidf")
            return cls(t["centroid"], t["idf"], t["unknown_idf"], data.pop("source", ""),
                       data.pop("train_questions", 0), data.pop("run_name", ""), data)
        except (ValueError, KeyError, TypeError):
            return None


class Router:
    """Picks the adapter whose domain profile is most similar to a request."""

    def __init__(self):
        self.profiles: dict[str, DomainProfile] = {}

    def add(self, name: str, profile: DomainProfile | None) -> None:
        if profile is not None:
            self.profiles[name] = profile

    def remove(self, name: str) -> None:
        self.profiles.pop(name, None)

    def route(self, question: str, context: str | None) -> tuple[str, float] | None:
        """(adapter, similarity) for the best match, or None when no adapter has a profile."""
        if not self.profiles:
            return None
        counts = terms(f"{question} {context or ''}")
        scores = {name: p.similarity(counts) for name, p in self.profiles.items()}
        best = max(scores, key=scores.get)
        return best, scores[best]
