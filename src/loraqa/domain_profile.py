"""An adapter's domain profile (loraqa_domain.json beside the adapter): what it was trained on.

Written at training time: where its training data came from, how many questions, the run name,
a TF-IDF centroid of its training questions and passages (the top terms with their weights,
and their IDF), and a sample of its training questions (for routing by sentence embeddings,
inference/routing.py). Automatic adapter choice (inference/routing.py) scores requests against it;
`list_domains` and `/v1/models` describe adapters with it. Read back validated: a damaged file
refuses the adapter rather than routing on garbage.

Written by hand rather than with scikit-learn's TfidfVectorizer: a profile must load without
pickle (loraqa refuses pickle files), so it is stored as JSON term weights, and applying it is one
sparse dot product; what remains of TF-IDF is a dozen lines.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from loraqa.errors import LoraqaError

DOMAIN_PROFILE_NAME = "loraqa_domain.json"
_WORD = re.compile(r"[^\W\d_]{2,}|\d+", re.UNICODE)
TOP_TERMS = 2000
ROUTING_QUESTIONS = 300  # training questions kept for routing by embeddings (a vote of the nearest)


def terms(text: str) -> Counter:
    return Counter(w.lower() for w in _WORD.findall(text))


def _tfidf(counts: Counter, idf: dict[str, float], unknown_idf: float) -> dict[str, float]:
    """Sublinear term frequency times IDF (terms the profile never saw weigh as the rarest)."""
    return {t: (1.0 + math.log(c)) * idf.get(t, unknown_idf) for t, c in counts.items()}


def _normalised(vec: dict[str, float]) -> dict[str, float]:
    norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
    return {t: v / norm for t, v in vec.items()}


def heaviest(weights: dict[str, float], n: int) -> list[tuple[str, float]]:
    """The n heaviest terms, heaviest first, ties in insertion order (as Counter.most_common)."""
    return sorted(weights.items(), key=lambda item: item[1], reverse=True)[:n]


@dataclass
class DomainProfile:
    centroid: dict[str, float]  # unit-length TF-IDF centroid of the training texts (top terms)
    idf: dict[str, float]
    unknown_idf: float
    source: str = ""
    train_questions: int = 0
    run_name: str = ""
    extra: dict = field(default_factory=dict)
    questions: list[str] = field(default_factory=list)  # a sample of the training questions

    @classmethod
    def from_rows(cls, rows: list[dict], source: str = "", run_name: str = "") -> DomainProfile:
        """The profile of an adapter's training rows (question and passage of each)."""
        docs = [terms(f"{r['question']} {r.get('context') or ''}") for r in rows]
        df = Counter(t for d in docs for t in d)
        n = len(docs)
        idf = {t: math.log((1 + n) / (1 + c)) + 1.0 for t, c in df.items()}
        unknown = math.log(1 + n) + 1.0
        total: dict[str, float] = defaultdict(float)
        for d in docs:
            for t, w in _normalised(_tfidf(d, idf, unknown)).items():
                total[t] += w / n
        top = dict(heaviest(total, TOP_TERMS))
        return cls(
            _normalised(top),
            {t: idf[t] for t in top},
            unknown,
            source,
            len(rows),
            run_name,
            questions=_sample([r["question"] for r in rows]),
        )

    @classmethod
    def combined(cls, parents: list[tuple[DomainProfile, float]], source: str) -> DomainProfile:
        """The profile of an adapter combined from others: the centroid is the parents' centroids
        weighted by |weight| (a combination covers each parent's domain by its share), a term's
        IDF the same weighted mean (a parent without the term counts its unknown-term IDF)."""
        total_weight = sum(abs(w) for _, w in parents) or 1.0
        shares = [(p, abs(w) / total_weight) for p, w in parents]
        centroid: dict[str, float] = defaultdict(float)
        for p, share in shares:
            for t, v in p.centroid.items():
                centroid[t] += share * v
        top = dict(heaviest(centroid, TOP_TERMS))
        idf = {t: sum(share * p.idf.get(t, p.unknown_idf) for p, share in shares) for t in top}
        unknown = sum(share * p.unknown_idf for p, share in shares)
        # each parent's questions by its share (a parent weighted 0 asks none)
        questions = [q for p, share in shares for q in _sample(p.questions, round(share * ROUTING_QUESTIONS))]
        return cls(
            _normalised(top), idf, unknown, source, sum(p.train_questions for p, _ in parents), "", questions=questions
        )

    def cosine(self, query: dict[str, float]) -> float:
        """Cosine similarity of a unit-length TF-IDF vector (`shared_query`) to the profile, in [0, 1]."""
        return sum(w * self.centroid.get(t, 0.0) for t, w in query.items())

    def describe(self) -> str:
        return f"trained on {self.train_questions} questions from {self.source}" + (
            f" (run {self.run_name})" if self.run_name else ""
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "source": self.source,
                "train_questions": self.train_questions,
                "run_name": self.run_name,
                "tfidf": {"centroid": self.centroid, "idf": self.idf, "unknown_idf": self.unknown_idf},
                "questions": self.questions,
                **self.extra,
            },
            ensure_ascii=False,
        )

    @classmethod
    def read(cls, adapter_dir: Path) -> DomainProfile | None:
        """The adapter's profile; None when it has none; a damaged one is refused."""
        path = Path(adapter_dir) / DOMAIN_PROFILE_NAME
        if not path.exists():
            return None
        try:
            if not path.is_file():  # a FIFO or device would block or never end
                raise ValueError(path)
            data = json.loads(path.read_text(encoding="utf-8"))
            t = data.pop("tfidf")
            questions = data.pop("questions", [])  # profiles written before have none
            profile = cls(
                t["centroid"],
                t["idf"],
                t["unknown_idf"],
                data.pop("source", ""),
                data.pop("train_questions", 0),
                data.pop("run_name", ""),
                data,
                questions,
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            profile = None
        if profile is None or not profile.is_valid():
            raise LoraqaError(
                f"{path} is damaged; delete it (the adapter then takes no part in automatic choice) "
                "or train the adapter again"
            )
        return profile

    def is_valid(self) -> bool:
        def weights(d) -> bool:
            return isinstance(d, dict) and all(isinstance(k, str) and _finite(v) for k, v in d.items())

        return (
            weights(self.centroid)
            and weights(self.idf)
            and _finite(self.unknown_idf)
            and isinstance(self.source, str)
            and isinstance(self.run_name, str)
            and isinstance(self.train_questions, int)
            and not isinstance(self.train_questions, bool)
            and isinstance(self.questions, list)
            and all(isinstance(q, str) for q in self.questions)
        )


def _sample(questions: list[str], n: int = ROUTING_QUESTIONS) -> list[str]:
    """Up to n of the questions, the same ones every time for the same list."""
    unique = list(dict.fromkeys(q for q in questions if isinstance(q, str) and q.strip()))
    return unique if len(unique) <= n else random.Random(0).sample(unique, n)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def shared_query(profiles: list[DomainProfile], counts: Counter) -> dict[str, float]:
    """One TF-IDF vector of a text for scoring it against several profiles, so that their scores
    compare: each term weighs as the rarest any profile finds it (unknown to a profile counts as
    that profile's rarest). Weighed by each profile's own IDF instead, the query differs per
    profile, and a broad profile (an adapter combined from others: the union of theirs) won every
    question, even those of its parents' own domains."""
    idf = {t: max(p.idf.get(t, p.unknown_idf) for p in profiles) for t in counts}
    return _normalised(_tfidf(counts, idf, 0.0))
