"""The interface every engine implements, and what an engine may be able to do beyond it."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from loraqa.adapters.folder import AdapterRef
from loraqa.adapters.names import BASE, ENGINE_BASE  # noqa: F401 - BASE is re-exported with the engine protocol


@dataclass
class Generated:
    """One window's answer as an engine generated it."""

    text: str
    score: float  # mean log-probability per token (EOS included)
    tokens: int  # generated tokens, EOS included
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None  # per token (greedy decoding only)
    stopped: bool = True  # ended with EOS (else it hit the token limit)

    def truncated(self, max_tokens: int, tokenizer) -> Generated:
        """The first max_tokens tokens, for a request that asked for fewer than its batch generated."""
        if self.tokens <= max_tokens:
            return self
        ids = self.token_ids[:max_tokens]
        logprobs = self.logprobs[:max_tokens] if self.logprobs is not None else None
        score = sum(logprobs) / len(logprobs) if logprobs else self.score
        return Generated(
            tokenizer.decode(ids, skip_special_tokens=True).strip(), score, max_tokens, ids, logprobs, stopped=False
        )


# names engines use inside a batch (PEFT's marker for "no adapter" in adapter_names=)
ENGINE_MARKERS = frozenset({ENGINE_BASE})


@dataclass(frozen=True)
class Capabilities:
    base_model: bool  # answers with no adapter at all (the name BASE)
    teacher_forcing: bool  # scores given target tokens (token accuracy): `scoring_model(name)`
    extractive: bool  # can restrict decoding to spans of the passage (eval.extractive)
    mixed_beam_batches: bool  # one beam-search call may mix adapters (greedy always may)


@dataclass
class GenerationBatch:
    """One model call: a row per window, each with its adapter."""

    adapters: list[str]
    sources: list[list[int]]  # input ids of each row
    max_new_tokens: int
    num_beams: int = 1
    passages: list[list[int] | None] | None = None  # passage ids: decoding limited to their spans
    no_answer: list[list[int] | None] | None = None  # the no-answer text's ids, allowed beside the spans

    def __post_init__(self):
        n = len(self.sources)
        self.passages = self.passages if self.passages is not None else [None] * n
        self.no_answer = self.no_answer if self.no_answer is not None else [None] * n


@runtime_checkable
class Engine(Protocol):
    kind: str  # what summaries and logs call it ("pytorch", "ctranslate2")
    capabilities: Capabilities
    device: str

    @property
    def dtype(self) -> str:
        """The precision answers are computed in ("fp32", "bf16", "int8" ...)."""

    @classmethod
    def create(cls, tokenizer, base_model: str | None, device: str, dtype: str, allow_pickle: bool) -> Engine:
        """The engine; the PyTorch one loads `base_model` now."""

    @classmethod
    def read_tokenizer(cls, folder: str):
        """The tokenizer an adapter folder (or a base model) holds, read as this engine needs it."""

    @classmethod
    def base_in(cls, ref: AdapterRef) -> str | None:
        """The base model to start from when the first adapter found is `ref` (an adapter root
        given without a base), or None when this engine does not serve such a folder."""

    def check(self, ref: AdapterRef) -> None:
        """Refuse an adapter this engine cannot attach, reading its files but never touching the
        live model: whatever it raises leaves every attached adapter as it was."""

    def attach(self, name: str, ref: AdapterRef) -> None:
        """Attach a checked adapter under `name`; on failure nothing of it stays attached."""

    def detach(self, name: str) -> None: ...

    def generate(self, batch: GenerationBatch) -> list[Generated]:
        """The answers of the batch's rows, in order."""


class TeacherForcing(Protocol):
    """Engines whose capabilities say teacher_forcing=True also offer the model itself."""

    def scoring_model(self, name: str) -> AbstractContextManager:
        """The model with only adapter `name` active (BASE: none), held while the block runs."""
