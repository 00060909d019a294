"""The CTranslate2 engine: one translator per exported adapter (`loraqa export --format ctranslate2`).

CTranslate2 runs T5 greedy decoding with int8 weights several times faster than PyTorch on a
CPU. It cannot apply LoRA at run time (OpenNMT/CTranslate2 #1186), so each adapter is its own
merged model; a batch is split by adapter and each part goes to its translator in one call.
Scores: the translator returns the summed log-probability of the answer's tokens (EOS included,
`length_penalty=0`), divided here by their number, the PyTorch engine's length-normalised score.
Its capabilities: unconstrained decoding only (no extractive mode), no bare base model, no
teacher forcing.
"""

from __future__ import annotations

import os
import threading
from typing import cast

from loraqa.adapters.folder import AdapterRef
from loraqa.errors import LoraqaError
from loraqa.inference.engines.base import Capabilities, Generated, GenerationBatch
from loraqa.modeling.files import TOKENIZER_FILE, load_tokenizer_file, same_vocabulary
from loraqa.optional import require


class CT2Engine:
    kind = "ctranslate2"
    capabilities = Capabilities(base_model=False, teacher_forcing=False, extractive=False, mixed_beam_batches=True)

    def __init__(self, tokenizer, device: str = "auto", threads: int = 0):
        self.tokenizer = tokenizer
        self.ct2 = require("ctranslate2", "the CTranslate2 engine")
        cuda = self.ct2.get_cuda_device_count() > 0
        if device == "cuda" and not cuda:
            raise LoraqaError(
                "the CTranslate2 engine was asked for cuda, but CTranslate2 sees no CUDA GPU; use device auto or cpu"
            )
        self.device = "cuda" if device in ("auto", "cuda") and cuda else "cpu"
        cores = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        # On a CPU, one single-threaded worker per core, each decoding its share of a batch: measured
        # 2.5-2.8x the answers/s of one worker with 2 threads on 2 cores (threads in one small GEMM wait
        # on each other at every decoding step; workers never do).
        self.workers = cores if self.device == "cpu" else 1
        self.translators: dict = {}
        self.compute_types: dict[str, str] = {}
        self.lock = threading.RLock()

    @classmethod
    def create(cls, tokenizer, base_model: str | None, device: str, dtype: str, allow_pickle: bool) -> CT2Engine:
        # each export is its own merged model: there is no base model to load, and no pickle to allow
        return cls(tokenizer, device)

    @classmethod
    def read_tokenizer(cls, folder: str):
        return load_tokenizer_file(folder)  # an export holds its tokenizer.json: no transformers, no torch

    @classmethod
    def base_in(cls, ref: AdapterRef) -> str | None:
        # an export is a whole model: its folder holds the tokenizer every export shares
        return str(ref.adapter_dir) if ref.kind == "ctranslate2" else None

    @property
    def dtype(self) -> str:
        return ",".join(sorted(set(self.compute_types.values()))) or "-"

    def check(self, ref: AdapterRef) -> None:
        if ref.kind != "ctranslate2":
            raise LoraqaError(
                f"{ref.adapter_dir} is a LoRA adapter; the CTranslate2 engine reads folders written by "
                f"`loraqa export RUN --format ctranslate2 --output DIR`"
            )

    def attach(self, name: str, ref: AdapterRef) -> None:
        self.check(ref)
        self.check_tokenizer(ref)
        try:
            translator = self.ct2.Translator(
                str(ref.adapter_dir),
                device=self.device,
                compute_type="default",
                inter_threads=self.workers,
                intra_threads=1,
            )
        except (RuntimeError, ValueError) as exc:
            raise LoraqaError(
                f"{ref.adapter_dir} is not a loadable CTranslate2 model ({str(exc).splitlines()[0][:160]}); "
                "export it again with `loraqa export`"
            ) from None
        with self.lock:
            self.translators[name] = translator
            self.compute_types[name] = getattr(translator, "compute_type", "default")

    def check_tokenizer(self, ref: AdapterRef) -> None:
        # Every export is its own model, but requests are read with one tokenizer (the first
        # export's): an export of another base model would get ids from a vocabulary it does not
        # know and answer garbage without any error.
        ours = self.tokenizer.folder  # a modeling.files.TokenizerFile: the engine reads exports only
        if ours.resolve() == ref.adapter_dir.resolve():
            return
        theirs = ref.adapter_dir / TOKENIZER_FILE
        if not theirs.is_file():
            raise LoraqaError(
                f"{ref.adapter_dir} has no {TOKENIZER_FILE}; export the adapter again with `loraqa export`"
            )
        if not same_vocabulary(ours / TOKENIZER_FILE, theirs):
            raise LoraqaError(
                f"{ref.adapter_dir} was exported with another tokenizer than {ours}: one server reads "
                "requests with one vocabulary; serve exports of the same base model together"
            )

    def detach(self, name: str) -> None:
        with self.lock:
            self.translators.pop(name, None)
            self.compute_types.pop(name, None)

    def generate(self, batch: GenerationBatch) -> list[Generated]:
        tokenizer, names = self.tokenizer, batch.adapters
        results: list[Generated | None] = [None] * len(batch.sources)
        for name in dict.fromkeys(names):
            rows = [i for i, n in enumerate(names) if n == name]
            out = self.translators[name].translate_batch(
                [tokenizer.convert_ids_to_tokens(batch.sources[i]) for i in rows],
                beam_size=batch.num_beams,
                max_decoding_length=batch.max_new_tokens,
                return_scores=True,
                return_end_token=True,
                max_batch_size=-(-len(rows) // self.workers),  # a share for each worker
                # greedy: the plain sum of log-probabilities, normalised below; beams rank as transformers does
                length_penalty=1.0 if batch.num_beams > 1 else 0.0,
            )
            for i, r in zip(rows, out):
                ids = tokenizer.convert_tokens_to_ids(r.hypotheses[0])
                score = r.scores[0] if batch.num_beams > 1 else r.scores[0] / max(len(ids), 1)
                text = tokenizer.decode(ids, skip_special_tokens=True).strip()
                results[i] = Generated(text, float(score), len(ids), ids, None, tokenizer.eos_token_id in ids)
        return cast(list[Generated], results)  # every row of the batch was answered by one worker
