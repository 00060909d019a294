"""Generate, check, filter: from sampled passages to rows of loraqa's data format.

Each row keeps its provenance (document, title, source, page, the passage's offsets in the
document, the generator, the round-trip F1), so a reviewer can find where a question came
from and `data.split_by=document` keeps a document's questions on one side of the split.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from loraqa.synth.checks import (
    CUT_OFF,
    EMPTY,
    NOT_IN_PASSAGE,
    ROUND_TRIP,
    UNKNOWN_NAME,
    QuestionLedger,
    locate,
    round_trip_f1,
    unknown_names,
)
from loraqa.synth.generators import Draft, QuestionWriter
from loraqa.synth.sampling import SourcePassage

if TYPE_CHECKING:  # the reader is handed an Answerer; importing it here would load the engines
    from loraqa.inference.answerer import Answerer


@dataclass
class SynthReport:
    passages: int = 0
    generated: int = 0
    kept: int = 0
    unanswerable: int = 0  # pairs added with a question set against another document's passage
    dropped: dict = field(default_factory=dict)  # reason -> pairs
    per_document: dict = field(default_factory=dict)  # document -> {generated, kept, dropped}
    generator: dict = field(default_factory=dict)  # what the generator did (requests, tokens, ...)
    min_roundtrip_f1: float | None = None
    roundtrip_margin: float | None = None  # pairs confirmed by the reader's likelihood: kept_by_likelihood
    kept_by_likelihood: int = 0
    answers_from_reader: int = 0  # kept pairs whose answer span the reader drew (reader_spans)
    skipped_files: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Reader:
    """Who answers the round trip: an Answerer and the adapter (or "base") it answers with.

    margin: also confirm a pair whose answer the reader finds nearly as likely as its own, at most
    `margin` below its own answer's score (mean log-probability per token). A reader that
    cannot yet tell two people of a passage apart often gives the other person's city for
    "Where was X born?": the round trip alone then drops the right pair, while a city for a
    question about a job, or the other person's city offered as X's, stays far less likely.

    min_f1: the round trip confirms a pair whose answer the reader's matches with at least this
    F1. spans: where the reader confirms a pair but draws the answer's bounds otherwise (F1
    below 1, its answer overlapping the pair's in the passage), keep the reader's span: the
    writer's answer was a candidate picked by pattern or an LLM's quote ("a grey kettle" for
    "What colour is the kettle...?"), the reader's is what the question asks ("grey"), in the
    bounds the QA data it learned from draws. The writer's answer stays in the row."""

    answerer: Answerer
    adapter: str
    batch_size: int = 16
    margin: float | None = None
    min_f1: float = 0.5
    spans: bool = True

    def answers(self, pairs: list[tuple[str, str]], progress=None) -> list:
        """The reader's Answer to each (question, passage); its text is "" where it abstained."""
        return self.answerer.answer(
            [{"question": q, "context": c, "adapter": self.adapter} for q, c in pairs],
            batch_size=self.batch_size,
            progress=progress,
        )

    def likelihoods(self, triples: list[tuple[str, str, str, int]]) -> list[float]:
        """The reader's score for a given answer to (question, passage, answer, where it is)."""
        return self.answerer.answer_logprobs(
            [
                {"question": q, "context": c, "answer": a, "answer_start": at, "adapter": self.adapter}
                for q, c, a, at in triples
            ],
            batch_size=self.batch_size,
        )


def synthesise(
    passages: list[SourcePassage],
    generator: QuestionWriter,
    reader: Reader | None,
    unanswerable: float = 0.0,
    seed: int = 42,
    progress: Callable[[str, int, int], None] | None = None,
    check_names: bool = True,
) -> tuple[list[dict], SynthReport]:
    """Rows that passed every check (the reader's round trip among them: see Reader), and the
    report. unanswerable: the share of kept pairs that also get a copy asked against a passage
    of another document, with no answer. progress(stage, done, total). check_names: drop a
    question that names what the passage never mentions."""
    min_roundtrip_f1 = reader.min_f1 if reader is not None else 0.0
    report = SynthReport(
        passages=len(passages),
        min_roundtrip_f1=min_roundtrip_f1 if reader else None,
        roundtrip_margin=reader.margin if reader else None,
    )
    drafts = generator.generate(passages, progress=_stage(progress, "writing questions"))
    report.generated = len(drafts)
    dropped: Counter = Counter()
    per_doc: dict[str, Counter] = {}
    located: list[tuple[Draft, int]] = []
    for d in drafts:
        doc = per_doc.setdefault(passages[d.passage].document, Counter())
        doc["generated"] += 1
        at = locate(d.answer, passages[d.passage].text, d.hint)
        reason = (
            EMPTY
            if not d.question.strip()
            else CUT_OFF
            if d.cut_off
            else NOT_IN_PASSAGE
            if at is None
            else UNKNOWN_NAME
            if check_names and unknown_names(d.question, passages[d.passage].text)
            else None
        )
        if reason:  # a writer that wrote nothing (or abstained), an answer the passage does not quote
            dropped[reason] += 1
            doc["dropped"] += 1
        elif at is not None:
            located.append((d, at))
    scores: list[float | None] = [None] * len(located)
    gaps: list[float | None] = [None] * len(located)  # how far below the reader's own answer (margin)
    written: dict[int, str] = {}  # the writer's answer, where the reader's span replaced it
    if reader is not None and located:
        said = reader.answers(
            [(d.question, passages[d.passage].text) for d, _ in located], progress=_stage(progress, "round trip")
        )
        f1s = [
            round_trip_f1(s.answer, passages[d.passage].text[at : at + len(d.answer.strip())])
            for s, (d, at) in zip(said, located)
        ]
        scores = [*f1s]
        if reader.spans:
            for i, (s, f1) in enumerate(zip(said, f1s)):
                if min_roundtrip_f1 <= f1 < 1 and _overlaps(s, *located[i]):
                    d = located[i][0]
                    written[i] = d.answer.strip()
                    located[i] = (
                        Draft(d.passage, d.question, passages[d.passage].text[s.start : s.end], s.start),
                        s.start,
                    )
        doubtful = [i for i, score in enumerate(f1s) if score < min_roundtrip_f1]
        if reader.margin is not None and doubtful:
            if progress is not None:
                progress("answer likelihood", 0, len(doubtful))
            triples = []
            for i in doubtful:
                d, at = located[i]
                text = passages[d.passage].text
                triples.append((d.question, text, text[at : at + len(d.answer.strip())], at))
            for i, likelihood in zip(doubtful, reader.likelihoods(triples)):
                gaps[i] = said[i].score - likelihood
            if progress is not None:
                progress("answer likelihood", len(doubtful), len(doubtful))

    # Repeats are judged among the pairs the reader confirmed, best confirmed first: a writer that
    # wrote one question for two answers keeps it for the answer the reader gives (or, confirmed by
    # likelihood, finds likeliest).
    def rank(i: int) -> tuple[bool, float, float]:
        score = scores[i]
        return (score is not None and score < min_roundtrip_f1, gaps[i] or 0.0, -(score or 0.0))

    order = sorted(range(len(located)), key=rank)
    margin = reader.margin if reader is not None else None
    ledger = QuestionLedger()
    kept = []
    for i in order:
        (d, at), score, p = located[i], scores[i], passages[located[i][0].passage]
        gap: float | None = gaps[i]
        confirmed = (
            score is None or score >= min_roundtrip_f1 or (gap is not None and margin is not None and gap <= margin)
        )
        reason = ledger.check(p.document, d.question, d.answer) if confirmed else ROUND_TRIP
        if reason:
            dropped[reason] += 1
            per_doc[p.document]["dropped"] += 1
            continue
        per_doc[p.document]["kept"] += 1
        kept.append(i)
    rows = []
    for i in sorted(kept):  # in the order they were generated
        (d, at), p = located[i], passages[located[i][0].passage]
        gap = gaps[i]
        extra: dict[str, Any] = {"roundtrip_logprob_gap": round(gap, 4)} if gap is not None else {}
        if i in written:
            extra["generated_answer"] = written[i]
        rows.append(
            _row(
                p, d.question.strip(), p.text[at : at + len(d.answer.strip())], at, generator.label, scores[i], **extra
            )
        )
    report.kept = len(rows)
    report.kept_by_likelihood = sum(1 for r in rows if "roundtrip_logprob_gap" in r)
    report.answers_from_reader = sum(1 for r in rows if "generated_answer" in r)
    rows += _unanswerable(rows, passages, unanswerable, seed)
    report.unanswerable = len(rows) - report.kept
    report.dropped = dict(dropped)
    report.per_document = {
        doc: {"generated": c["generated"], "kept": c["kept"], "dropped": c["dropped"]} for doc, c in per_doc.items()
    }
    report.generator = asdict(generator.stats)
    return rows, report


def _overlaps(said, draft: Draft, at: int) -> bool:
    """The reader's answer is quoted from the passage where it overlaps the draft's answer."""
    return said.start is not None and said.start < at + len(draft.answer.strip()) and at < said.end


def _row(
    p: SourcePassage, question: str, answer: str | None, at: int | None, generator: str, score: float | None, **extra
) -> dict:
    rid = hashlib.sha256(f"{p.document}\x00{p.start}\x00{question}\x00{answer is None}".encode()).hexdigest()[:16]
    answers = {"text": [answer], "answer_start": [at]} if answer is not None else {"text": [], "answer_start": []}
    return {
        "id": rid,
        "title": p.title,
        "context": p.text,
        "question": question,
        "answers": answers,
        "document": p.document,
        "source": p.source,
        "page": p.page,
        "passage_start": p.start,
        "passage_end": p.end,
        "generator": generator,
        "roundtrip_f1": None if score is None else round(score, 4),
        **extra,
    }


def _unanswerable(rows: list[dict], passages: list[SourcePassage], share: float, seed: int) -> list[dict]:
    """Questions set against a passage of another document, with no answer, so that an adapter
    trained on them learns to abstain when the passage does not hold the answer."""
    if share <= 0 or not rows:
        return []
    rng = random.Random(seed)
    out = []
    for row in rng.sample(rows, max(1, round(share * len(rows)))):
        others = [p for p in passages if p.document != row["document"]]
        if not others:
            continue
        p = rng.choice(others)
        out.append(_row(p, row["question"], None, None, row["generator"], None, asked_of=row["id"]))
    return out


def _stage(progress, stage: str):
    return None if progress is None else (lambda done, total: progress(stage, done, total))
