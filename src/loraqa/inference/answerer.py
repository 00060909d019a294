"""The answering interface: questions (with documents of any length) in, answers with evidence out.

One Answerer holds the loaded adapters (inference/registry.py: prompt template, window, no-answer
text, calibrated threshold, domain profile) and an engine that runs the model
(inference/engines/). Every question is planned into windows (inference/reading.py); the
windows of all questions share length-sorted batches, which may mix adapters; each question's
answer is chosen among its windows' answers.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TypedDict, cast

from loraqa.adapters.folder import AdapterRef, resolve_adapter
from loraqa.config import load_config
from loraqa.config.templates import uses_context
from loraqa.data.tasks import quoted_at
from loraqa.errors import LoraqaError, UsageError, option
from loraqa.inference.engines import BASE, Engine, capabilities_of, create_engine, engine_type
from loraqa.inference.engines.base import TeacherForcing
from loraqa.inference.library import CollectionSettings, Library, plan_passages
from loraqa.inference.reading import Answer, Job, Reading, choose_answer, fill, generation_batch, plan_reading, read_all
from loraqa.inference.registry import AdapterRegistry, LoadedAdapter, ReadingSettings, check_name
from loraqa.inference.routing import AUTO
from loraqa.retrieval.filters import Filter

__all__ = ["AUTO", "BASE", "Answer", "Answerer"]


def trained_dtype(choice: str, refs) -> str:
    """dtype "auto" for adapters that were all trained in fp32 (the seed and gtx1650 presets) is
    fp32: they answer in the precision they were trained, evaluated and calibrated in, and not in
    the bf16 that "auto" picks on a CPU or GPU that has it (answers near the no-answer threshold,
    and a small model's unsure words, differ between the two). Anything else keeps the choice."""
    saved = {ref.config.model.dtype for ref in refs if ref.kind == "lora"}
    return "fp32" if choice == "auto" and saved == {"fp32"} else choice


class AnswererOptions(TypedDict, total=False):
    """Answerer's keyword arguments, for a function that loads one for its caller."""

    base_model: str | None
    device: str
    dtype: str
    allow_pickle: bool
    engine: str
    max_adapters: int | None
    collections: CollectionSettings | None


class Answerer:
    """One base model, many adapters; `answer()` takes [{question, context?, adapter?}]."""

    def __init__(
        self,
        adapters: Mapping[str, str | Path | AdapterRef] | None = None,
        base_model: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        allow_pickle: bool = False,
        engine: str = "pytorch",
        max_adapters: int | None = None,
        collections: CollectionSettings | None = None,
    ):
        """Load the base model (or, for CTranslate2, each export) and the adapters.

        Args:
            adapters: Name -> a run directory or adapter folder, or an AdapterRef (whose config,
                e.g. with eval-time overrides, is then used as given).
            base_model: A hub id or local folder (default: the one the first adapter was
                trained on).
            device: auto (CUDA if present), cpu or cuda.
            dtype: auto (as the adapters were trained, where the hardware has it), fp32 or bf16.
            allow_pickle: Accept pickle weight files, for the base model and every adapter,
                including ones loaded later.
            engine: pytorch (one base model, LoRA adapters) or ctranslate2 (folders written by
                `loraqa export`, one merged model each).
            max_adapters: The most adapters attached at once.
            collections: Where questions that come without a passage are answered from (the
                store, which adapter reads which collection; a request may also name one).

        Raises:
            LoraqaError: A folder that is not an adapter, adapters of different base models, an
                unknown collection or engine; raised before any model loads where it can be.

        `apply_threshold` (default True) may be set to False to answer without the calibrated
        no-answer threshold, which is what `loraqa eval` calibrates it from.
        """
        collections = collections or CollectionSettings()
        adapters = dict(adapters or {})
        capabilities = capabilities_of(engine)  # an unknown engine is refused before anything loads
        for name in adapters:
            check_name(name)
        refs = {name: p if isinstance(p, AdapterRef) else resolve_adapter(p) for name, p in adapters.items()}
        first = next(iter(refs.values()), None)
        if base_model is None and first is not None:
            base_model = first.config.model.name
        self.base_model, self.apply_threshold = base_model, True
        if first is None and not capabilities.base_model and base_model is None:
            raise LoraqaError(
                "this engine has no base model of its own: give at least one adapter exported by `loraqa export`"
            )
        if first is None and base_model is None:
            raise LoraqaError(f"give at least one adapter, or a base model with {option('model')}")
        # for planning; base_model, with no adapter given, is for CTranslate2 an export whose tokenizer the later ones share
        self.tokenizer = engine_type(engine).read_tokenizer(str(first.adapter_dir) if first else str(base_model))
        # The model's own copy: a server plans new requests on one thread while the model decodes on
        # another, and one fast tokenizer used from two threads at once can fail ("Already borrowed").
        self.model_tokenizer = copy.deepcopy(self.tokenizer)
        dtype = trained_dtype(dtype, refs.values())
        self.engine: Engine = create_engine(engine, self.model_tokenizer, base_model, device, dtype, allow_pickle)
        self.registry = AdapterRegistry(self.engine, allow_pickle, max_adapters)
        self.lock = threading.RLock()  # the Python API's callers may share one Answerer between threads
        self.library = Library(collections.store, collections.query_limits, collections.embedder)
        bindings = dict(collections.bound)
        for name in bindings:
            if name not in refs:
                raise UsageError(
                    f"a collection is bound to '{name}', which is not one of the adapters: {', '.join(refs) or 'none'}"
                )
            self.library.open(bindings[name])  # an unknown collection is refused before any model loads
        for name, ref in refs.items():
            self.registry.load(name, ref, collection=bindings.get(name))

    @property
    def device(self) -> str:
        return self.engine.device

    @property
    def dtype(self) -> str:
        return self.engine.dtype

    @property
    def names(self) -> list[str]:
        return self.registry.names

    def adapter(self, name: str) -> LoadedAdapter | None:
        return self.registry.get(name)

    def add_adapter(self, name: str, path: str | Path) -> None:
        with self.lock:
            self.registry.load(name, path)

    def remove_adapter(self, name: str) -> None:
        with self.lock:
            self.registry.unload(name)

    def default_adapter(self) -> str:
        return self.registry.default()

    def scoring_model(self, name: str) -> AbstractContextManager:
        """The model with only adapter `name` active, for engines with capabilities.teacher_forcing."""
        return cast(TeacherForcing, self.engine).scoring_model(name)

    # ------------------------------------------------------------ reading

    def plan(
        self, request: dict, offsets_cache: dict | None = None, max_windows: int | None = None, tokenizer=None
    ) -> Reading:
        """The windows of one request, rendered as its adapter expects. Bad input raises here,
        before any model work. "like": render as that adapter would (e.g. the base model
        scored on an adapter's prompts). tokenizer: a copy of self.tokenizer for a thread of
        its own (one tokenizer must not be used by two threads at once)."""
        name, route_score = self.registry.choose(request.get("adapter"), request["question"], request.get("context"))
        like = self.registry.get(request.get("like") or name)
        chosen = self.registry.get(name)
        s = like.settings if like else ReadingSettings.for_base(bool(request.get("context")))
        threshold = s.threshold if self.apply_threshold else None
        max_new = min(s.max_new_tokens, request.get("max_new_tokens") or s.max_new_tokens)
        collection = request.get("collection") or (chosen.collection if chosen else None)
        tokenizer = tokenizer or self.tokenizer
        if request.get("context") is None and collection is not None and uses_context(s.template):
            hits = self.library.retrieve(
                collection,
                request["question"],
                s.top_k,
                s.min_score,
                request.get("mode") or s.mode,
                Filter.of(request.get("filters")),
                rerank=(s.rerank_model, s.rerank_candidates) if s.rerank_model else None,
            )
            inputs = plan_passages(tokenizer, request["question"], hits, s, offsets_cache, max_windows)
            return Reading(
                name,
                inputs,
                max_new,
                s.no_answer_text,
                threshold,
                s.extractive,
                route_score,
                hits=hits,
                passage_weight=s.passage_weight,
            )
        inputs = plan_reading(
            tokenizer,
            request["question"],
            request.get("context"),
            s.shape,
            offsets_cache=offsets_cache,
            max_windows=max_windows,
        )
        return Reading(name, inputs, max_new, s.no_answer_text, threshold, s.extractive, route_score)

    def run(self, batch: list[Job], num_beams: int = 1) -> None:
        """Answer one batch of windows (reading, window index), filling in their results."""
        tokenizer = self.model_tokenizer
        fill(batch, self.engine.generate(generation_batch(batch, tokenizer, num_beams)), tokenizer)

    def choose_answer(self, reading: Reading) -> Answer:
        return choose_answer(reading, self.apply_threshold)

    def answer(
        self,
        requests: list[dict],
        batch_size: int = 16,
        num_beams: int = 1,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Answer]:
        """Answers for the requests, in order, every window of every request batched together.

        Args:
            requests: Dicts with `question`, and optionally `context` (the passage, any length:
                read in windows), `adapter` (a name, `base` or `auto`), `collection` (answer
                from its passages when there is no context), `mode` and `filters` (how the
                collection is searched).
            batch_size: Windows per model call.
            num_beams: Beam search width (1: greedy).
            progress: Called with (windows done, windows in all).

        Returns:
            One Answer per request: its text, score, no-answer flag, offsets in the passage and,
            for an answer from a collection, its citations.

        Raises:
            LoraqaError: An unknown adapter or collection, an empty question or passage, too
                much work for the limits; raised before any model work.
        """
        with self.lock:
            cache: dict = {}
            return self.read([self.plan(r, cache) for r in requests], batch_size, num_beams, progress)

    def answer_logprobs(self, requests: list[dict], batch_size: int = 16) -> list[float]:
        """For [{question, context, answer, adapter, answer_start?}]: the mean log-probability per
        token the adapter gives that answer (EOS included) in a window of the passage that holds
        it (at answer_start where given, else its first occurrence), the scale of `Answer.score`
        for its own answer. Engines with teacher forcing only."""
        if not self.engine.capabilities.teacher_forcing:
            raise LoraqaError("scoring a given answer needs the PyTorch engine (teacher forcing)")
        # transformers and torch: the CTranslate2 path imports this module and never scores given answers
        from loraqa.data.features import FeatureCounts, encode_row
        from loraqa.inference.generation import target_logprobs

        out: list[float | None] = [None] * len(requests)
        with self.lock:
            for name in dict.fromkeys(r["adapter"] for r in requests):
                adapter = self.registry.get(name)
                data_cfg = adapter.ref.config.data if adapter else load_config("default").data
                if not adapter:  # the bare base model reads with the template it answers with
                    data_cfg.template = ReadingSettings.for_base(True).template
                rows = [
                    (
                        i,
                        {
                            "id": str(i),
                            "question": r["question"],
                            "context": r["context"],
                            "answers": {
                                "text": [r["answer"]],
                                "answer_start": [quoted_at(r["answer"], r["context"], r.get("answer_start"))],
                            },
                        },
                    )
                    for i, r in enumerate(requests)
                    if r["adapter"] == name
                ]
                # not training: every row gets its feature (None only drops a training row that cannot fit)
                feats = [
                    cast(dict, encode_row(self.tokenizer, row, data_cfg, False, FeatureCounts())) for _, row in rows
                ]
                with self.scoring_model(name) as model:
                    scores = target_logprobs(model, self.model_tokenizer, feats, batch_size)
                for (i, _), score in zip(rows, scores):
                    out[i] = score
        return cast(list[float], out)  # every request belongs to one of the adapters scored

    def read(
        self,
        readings: list[Reading],
        batch_size: int = 16,
        num_beams: int = 1,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Answer]:
        """Answer planned readings: all their windows in length-sorted batches, then choose each answer."""
        with self.lock:
            separate = num_beams > 1 and not self.engine.capabilities.mixed_beam_batches
            read_all(readings, lambda batch: self.run(batch, num_beams), batch_size, separate, progress)
            return [self.choose_answer(reading) for reading in readings]
