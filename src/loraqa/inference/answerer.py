"""The answering interface: questions (with documents of any length) in, answers with evidence out.

One Answerer holds the adapters' configs (prompt template, window, no-answer text, calibrated
threshold) and an engine that runs the model. Every question is read in windows
(inference/reading.py); the windows of all questions share length-sorted batches, which may
mix adapters; each question's answer is combined from its windows' answers.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from loraqa.artifacts import AdapterRef, resolve_adapter
from loraqa.errors import AdapterExists, AdapterNotFound, LoraqaError, UsageError
from loraqa.inference.ct2_engine import CT2Engine
from loraqa.inference.reading import Answer, Reading, combine, plan_reading
from loraqa.inference.routing import AUTO, DomainProfile, Router
from loraqa.inference.torch_engine import BASE, TorchEngine
from loraqa.modeling.loading import load_tokenizer

__all__ = ["AUTO", "BASE", "ENGINES", "Answer", "Answerer"]
ENGINES = ("pytorch", "ctranslate2")
log = logging.getLogger("loraqa")


@dataclass
class ReadingSettings:
    """How an adapter reads a question: from the config it was trained with."""
    template: str
    max_source: int
    overlap: int
    max_new_tokens: int
    no_answer_text: str | None
    extractive: bool = False
    threshold: float | None = None

    @classmethod
    def of(cls, ref: AdapterRef) -> "ReadingSettings":
        c = ref.config
        return cls(c.data.template, c.data.max_source_length, c.data.window_overlap, c.eval.max_new_tokens,
                   c.data.unanswerable_text, c.eval.extractive, ref.no_answer_threshold)


def _base_settings(has_context: bool) -> ReadingSettings:
    return ReadingSettings("squad" if has_context else "question", 512, 128, 32, None)


class Answerer:
    """One base model, many adapters; `answer()` takes [{question, context?, adapter?}]."""

    def __init__(self, adapters: dict[str, str | Path | AdapterRef] | None = None, base_model: str | None = None,
                 device: str = "auto", dtype: str = "auto", allow_pickle: bool = False,
                 apply_threshold: bool = True, engine: str = "pytorch"):
        """adapters: name -> a run directory or adapter folder, or an AdapterRef (whose config,
        e.g. with eval-time overrides, is then used as given). apply_threshold=False answers
        without the calibrated no-answer threshold (what `loraqa eval` calibrates it from).
        engine: "pytorch" (one base model, LoRA adapters) or "ctranslate2" (folders written by
        `loraqa export`, one merged model each)."""
        adapters = dict(adapters or {})
        for reserved in (BASE, AUTO):
            if reserved in adapters:
                raise LoraqaError(f"'{reserved}' is a reserved name ({'the base model without an adapter' if reserved == BASE else 'automatic adapter choice'}); name the adapter otherwise")
        if engine not in ENGINES:
            raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, got '{engine}'")
        refs = {name: p if isinstance(p, AdapterRef) else resolve_adapter(p) for name, p in adapters.items()}
        if base_model is None:
            if not refs:
                raise LoraqaError("give at least one adapter, or a base model with --model")
            base_model = next(iter(refs.values())).config.model.name
        self.base_model, self.apply_threshold = base_model, apply_threshold
        if engine == "ctranslate2":
            if not refs:
                raise LoraqaError("--engine ctranslate2 needs at least one exported adapter (loraqa export)")
            self.engine = CT2Engine(device)
        else:
            self.engine = TorchEngine(base_model, device, dtype, allow_pickle)
        first = next(iter(refs.values()), None)
        self.tokenizer = load_tokenizer(str(first.adapter_dir) if first else base_model)
        self.configs: dict = {}
        self.paths: dict[str, str] = {}
        self.settings: dict[str, ReadingSettings] = {}
        self.profiles: dict[str, DomainProfile] = {}
        self.router = Router()
        self.lock = threading.RLock()
        for name, ref in refs.items():
            self._attach(name, ref)

    @property
    def device(self) -> str:
        return self.engine.device

    @property
    def dtype(self) -> str:
        return self.engine.dtype

    def _attach(self, name: str, ref: AdapterRef) -> None:
        self.engine.attach(name, ref)
        self.configs[name] = ref.config
        self.paths[name] = str(ref.adapter_dir)
        self.settings[name] = ReadingSettings.of(ref)
        profile = DomainProfile.read(ref.adapter_dir)
        if profile is None:
            log.warning(f"adapter '{name}' has no domain profile ({ref.adapter_dir}/loraqa_domain.json, written by "
                        f"`loraqa train`): `{AUTO}` will never choose it")
        else:
            self.profiles[name] = profile
            self.router.add(name, profile)

    @property
    def names(self) -> list[str]:
        return list(self.configs) + ([BASE] if self.engine.has_base else [])

    def add_adapter(self, name: str, path: str) -> None:
        with self.lock:
            if name in self.configs or name == BASE:
                raise AdapterExists(f"an adapter named '{name}' is already loaded; delete it first or pick another name")
            self._attach(name, resolve_adapter(path))

    def remove_adapter(self, name: str) -> None:
        with self.lock:
            if name not in self.configs:
                raise AdapterNotFound(f"no adapter named '{name}' is loaded")
            self.engine.detach(name)
            del self.configs[name], self.paths[name], self.settings[name]
            self.profiles.pop(name, None)
            self.router.remove(name)

    def default_adapter(self) -> str:
        return next(iter(self.configs), BASE)

    def using(self, name: str):
        """The engine's model with only adapter `name` active, held under its lock."""
        return self.engine.using(name)

    # ------------------------------------------------------------ reading

    def adapter_of(self, request: dict) -> tuple[str, float | None]:
        """The adapter a request names (or the default), or for `auto` the one whose domain
        profile best matches its question and passage, with that match's score."""
        name = request.get("adapter") or self.default_adapter()
        if name == AUTO:
            routed = self.router.route(request["question"], request.get("context"))
            if routed is None:
                raise AdapterNotFound(f"'{AUTO}' needs adapters with a domain profile (written by `loraqa train`); "
                                      f"none of the loaded ones has one: {', '.join(self.names)}")
            return routed
        if name not in self.names:
            raise AdapterNotFound(f"unknown adapter '{name}'; loaded: {', '.join(self.names + [AUTO])}")
        return name, None

    def plan(self, request: dict) -> Reading:
        """The windows of one request, rendered as its adapter expects. Bad input raises here,
        before any model work. "like": render as that adapter would (e.g. the base model
        scored on an adapter's prompts)."""
        name, route_score = self.adapter_of(request)
        like = request.get("like") or name
        s = self.settings.get(like) or _base_settings(bool(request.get("context")))
        inputs = plan_reading(self.tokenizer, request["question"], request.get("context"), s.template, s.max_source,
                              s.overlap, extractive=s.extractive)
        threshold = s.threshold if self.apply_threshold else None
        max_new = min(s.max_new_tokens, request.get("max_new_tokens") or s.max_new_tokens)
        return Reading(name, inputs, max_new, s.no_answer_text, threshold, s.extractive, route_score)

    def run(self, batch: list[tuple[Reading, int]], num_beams: int = 1) -> None:
        """Answer one batch of windows (reading, window index), filling in their results."""
        inputs = [reading.inputs[i] for reading, i in batch]
        no_answer = {}
        for reading, _ in batch:
            text = reading.no_answer_text
            if reading.extractive and text is not None and text not in no_answer:
                no_answer[text] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        results = self.engine.generate(
            [reading.adapter for reading, _ in batch], [x.source for x in inputs], self.tokenizer,
            max(reading.max_new_tokens for reading, _ in batch), num_beams,
            passages=[x.passage for x in inputs],
            no_answer=[no_answer.get(reading.no_answer_text) if reading.extractive else None for reading, _ in batch])
        for (reading, i), result in zip(batch, results):
            reading.results[i] = result.truncated(reading.max_new_tokens, self.tokenizer)

    def answer(self, requests: list[dict], batch_size: int = 16, num_beams: int = 1,
               progress: Callable[[int, int], None] | None = None) -> list[Answer]:
        """Answers for [{question, context?, adapter?}], in order. Unknown adapters and bad
        input raise before any model work. progress(done, total) counts windows."""
        with self.lock:
            return self.read([self.plan(r) for r in requests], batch_size, num_beams, progress)

    def read(self, readings: list[Reading], batch_size: int = 16, num_beams: int = 1,
             progress: Callable[[int, int], None] | None = None) -> list[Answer]:
        """Answer planned readings: all their windows in length-sorted batches, then combine."""
        with self.lock:
            jobs = [(reading, i) for reading in readings for i in range(len(reading.inputs))]
            jobs.sort(key=lambda job: len(job[0].inputs[job[1]].source), reverse=True)
            groups = [jobs] if num_beams == 1 else [[j for j in jobs if j[0].adapter == name]
                                                    for name in dict.fromkeys(r.adapter for r in readings)]
            done = 0
            for group in groups:
                for start in range(0, len(group), batch_size):
                    batch = group[start:start + batch_size]
                    self.run(batch, num_beams)
                    done += len(batch)
                    if progress is not None:
                        progress(done, len(jobs))
            return [combine(reading, self.apply_threshold) for reading in readings]
