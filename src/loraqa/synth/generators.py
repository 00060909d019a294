"""Writers of questions for passages.

LocalGenerator: a question-generation adapter (`loraqa train --set data.task=question_generation`)
writes one question for each answer candidate of a passage, in the Answerer's batches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from loraqa.synth.candidates import answer_candidates
from loraqa.synth.sampling import SourcePassage


@dataclass
class Draft:
    """One generated pair, before any check."""

    passage: int  # index into the sampled passages
    question: str
    answer: str
    hint: int | None = None  # where the generator found the answer in the passage
    cut_off: bool = False  # the writer reached its token limit mid-question (a loop, a ramble)


@dataclass
class GeneratorStats:
    requests: int = 0
    malformed: int = 0  # replies that could not be read as pairs
    malformed_reasons: dict = field(default_factory=dict)  # why, for each malformed reply

    def malformed_reply(self, why: str) -> None:
        self.malformed += 1
        self.malformed_reasons[why] = self.malformed_reasons.get(why, 0) + 1

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: int = 0
    extra: dict = field(default_factory=dict)


class QuestionWriter(Protocol):
    """What synthesise() asks questions of: a local adapter (LocalGenerator) or an
    OpenAI-compatible endpoint (OpenAIGenerator)."""

    label: str  # noted in every row it wrote
    stats: GeneratorStats

    def generate(
        self, passages: list[SourcePassage], progress: Callable[[int, int], None] | None = None
    ) -> list[Draft]: ...


class LocalGenerator:
    """Questions from a question-generation adapter loaded in an Answerer (as adapter `name`)."""

    def __init__(self, answerer, name: str, label: str, per_passage: int = 3, seed: int = 42, batch_size: int = 16):
        self.answerer, self.name, self.label = answerer, name, label
        self.per_passage, self.seed, self.batch_size = per_passage, seed, batch_size
        self.stats = GeneratorStats()

    def generate(
        self, passages: list[SourcePassage], progress: Callable[[int, int], None] | None = None
    ) -> list[Draft]:
        plans = []
        for i, p in enumerate(passages):
            for answer, start in answer_candidates(p.text, self.per_passage, f"{self.seed}:{p.document}:{p.start}"):
                plans.append((i, answer, start))
        requests = [{"question": answer, "context": passages[i].text, "adapter": self.name} for i, answer, _ in plans]
        written = self.answerer.answer(requests, batch_size=self.batch_size, progress=progress)
        self.stats.requests += len(requests)
        self.stats.prompt_tokens += sum(a.prompt_tokens or 0 for a in written)
        self.stats.completion_tokens += sum(a.completion_tokens or 0 for a in written)
        return [
            Draft(i, a.answer, answer, start, cut_off=not a.stopped) for (i, answer, start), a in zip(plans, written)
        ]
