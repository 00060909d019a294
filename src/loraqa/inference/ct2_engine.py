"""The CTranslate2 engine: one translator per exported adapter (`loraqa export --format ctranslate2`).

CTranslate2 runs T5 greedy decoding with int8 weights several times faster than PyTorch on a
CPU. It cannot apply LoRA at run time (OpenNMT/CTranslate2 #1186), so each adapter is its own
merged model; a batch is split by adapter and each part goes to its translator in one call.
Scores: the translator returns the summed log-probability of the answer's tokens (EOS included,
`length_penalty=0`), divided here by their number, the PyTorch engine's length-normalised score.
Decoding is unconstrained (no extractive mode) and there is no bare base model.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager

from loraqa.artifacts import AdapterRef
from loraqa.errors import AdapterNotFound, LoraqaError
from loraqa.inference.generation import Generated
from loraqa.optional import require

NO_TEACHER_FORCING = "the CTranslate2 engine cannot score teacher-forced tokens; use --engine pytorch for that"


class CT2Engine:
    name = "ctranslate2"
    has_base = False

    def __init__(self, device: str = "auto", threads: int = 0):
        self.ct2 = require("ctranslate2", "--engine ctranslate2")
        cuda = self.ct2.get_cuda_device_count() > 0
        if device == "cuda" and not cuda:
            raise LoraqaError("--engine ctranslate2 on cuda, but CTranslate2 sees no CUDA GPU; use device auto or cpu")
        self.device = "cuda" if device in ("auto", "cuda") and cuda else "cpu"
        cores = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        # On a CPU, one single-threaded worker per core, each decoding its share of a batch: measured
        # 2.5-2.8x the answers/s of one worker with 2 threads on 2 cores (threads in one small GEMM wait
        # on each other at every decoding step; workers never do).
        self.workers = cores if self.device == "cpu" else 1
        self.translators: dict = {}
        self.compute_types: dict[str, str] = {}
        self.adapters: set[str] = set()
        self.lock = threading.RLock()

    @property
    def dtype(self) -> str:
        return ",".join(sorted(set(self.compute_types.values()))) or "-"

    def check_fits(self, ref: AdapterRef) -> None:
        if ref.kind != "ctranslate2":
            raise LoraqaError(f"{ref.adapter_dir} is a LoRA adapter; the CTranslate2 engine reads folders written by "
                              f"`loraqa export RUN --format ctranslate2 --output DIR`")

    def attach(self, name: str, ref: AdapterRef) -> None:
        self.check_fits(ref)
        try:
            translator = self.ct2.Translator(str(ref.adapter_dir), device=self.device, compute_type="default",
                                             inter_threads=self.workers, intra_threads=1)
        except (RuntimeError, ValueError) as exc:
            raise LoraqaError(f"{ref.adapter_dir} is not a loadable CTranslate2 model ({str(exc).splitlines()[0][:160]}); "
                              "export it again with `loraqa export`") from None
        with self.lock:
            self.translators[name] = translator
            self.compute_types[name] = getattr(translator, "compute_type", "default")
            self.adapters.add(name)

    def detach(self, name: str) -> None:
        with self.lock:
            self.translators.pop(name, None)
            self.compute_types.pop(name, None)
            self.adapters.discard(name)

    @contextmanager
    def using(self, name: str):
        raise LoraqaError(NO_TEACHER_FORCING)
        yield  # pragma: no cover - a context manager that always refuses

    def generate(self, names: list[str], sources: list[list[int]], tokenizer, max_new_tokens: int, num_beams: int,
                 passages: list[list[int] | None], no_answer: list[list[int] | None]) -> list[Generated]:
        if any(p is not None for p in passages):
            raise LoraqaError("eval.extractive needs the PyTorch engine: CTranslate2 decodes without constraints")
        results: list[Generated | None] = [None] * len(sources)
        for name in dict.fromkeys(names):
            if name not in self.translators:
                raise AdapterNotFound(f"no exported adapter named '{name}' is loaded (the CTranslate2 engine has no base model)")
            rows = [i for i, n in enumerate(names) if n == name]
            out = self.translators[name].translate_batch(
                [tokenizer.convert_ids_to_tokens(sources[i]) for i in rows], beam_size=num_beams,
                max_decoding_length=max_new_tokens, return_scores=True, return_end_token=True,
                max_batch_size=-(-len(rows) // self.workers),  # a share for each worker
                # greedy: the plain sum of log-probabilities, normalised below; beams rank as transformers does
                length_penalty=1.0 if num_beams > 1 else 0.0)
            for i, r in zip(rows, out):
                ids = tokenizer.convert_tokens_to_ids(r.hypotheses[0])
                score = r.scores[0] if num_beams > 1 else r.scores[0] / max(len(ids), 1)
                text = tokenizer.decode(ids, skip_special_tokens=True).strip()
                results[i] = Generated(text, float(score), len(ids), ids, None, tokenizer.eos_token_id in ids)
        return results
