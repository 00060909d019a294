"""The PyTorch engine: one base model in memory, LoRA adapters attached by name (PEFT).

Batches may mix adapters: greedy decoding routes each row through its own adapter in one
generate() call (PEFT `adapter_names=`); beam search with mixed adapters needs a recent PEFT
(peft #2283), so the Answerer sends beams one adapter per batch.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

from peft import PeftModel

from loraqa.artifacts import AdapterRef
from loraqa.errors import LoraqaError
from loraqa.inference.generation import Generated, generate_scored, prepare_for_inference
from loraqa.modeling.loading import load_base_model, load_seq2seq_config, refuse_pickle
from loraqa.modeling.precision import resolve_device, resolve_dtype

BASE = "base"  # the name that means "no adapter"


class TorchEngine:
    name = "pytorch"

    def __init__(self, base_model: str, device: str = "auto", dtype: str = "auto", allow_pickle: bool = False):
        self.base_model, self.allow_pickle = base_model, allow_pickle
        self.device = resolve_device(device)
        config = load_seq2seq_config(base_model)
        self.dtype = resolve_dtype(dtype, self.device, config.model_type)
        self.model = load_base_model(base_model, self.dtype, self.device, allow_pickle=allow_pickle)
        self.adapters: set[str] = set()
        self.lock = threading.RLock()
        prepare_for_inference(self.model, self.dtype)

    def attach(self, name: str, ref: AdapterRef) -> None:
        refuse_pickle(ref.adapter_dir, "adapter", self.allow_pickle)
        with self.lock:
            try:
                if not isinstance(self.model, PeftModel):
                    self.model = PeftModel.from_pretrained(self.model, str(ref.adapter_dir), adapter_name=name)
                else:
                    self.model.load_adapter(str(ref.adapter_dir), adapter_name=name)
            except Exception as exc:  # noqa: BLE001 - shape mismatches, missing files: all "does not fit"
                raise LoraqaError(f"adapter {ref.adapter_dir} does not fit the base model {self.base_model} "
                                  f"({str(exc).splitlines()[0][:160]}); pass the base it was trained on with --model") from None
            self.adapters.add(name)
            prepare_for_inference(self.model, self.dtype)

    def detach(self, name: str) -> None:
        with self.lock:
            self.model.delete_adapter(name)
            self.adapters.discard(name)

    @contextmanager
    def using(self, name: str):
        """The model with only adapter `name` active (BASE: none), held under the lock."""
        with self.lock:
            if not self.adapters:  # a bare base model
                yield self.model
            elif name == BASE:
                with self.model.disable_adapter():
                    yield self.model
            else:
                self.model.set_adapter(name)
                yield self.model

    def generate(self, names: list[str], sources: list[list[int]], tokenizer, max_new_tokens: int, num_beams: int,
                 passages: list[list[int] | None], no_answer: list[list[int] | None]) -> list[Generated]:
        extra = {"passages": passages, "no_answer": no_answer}
        with self.lock:
            if self.adapters and len(set(names)) > 1:  # mixed batch (greedy only)
                adapter_names = ["__base__" if n == BASE else n for n in names]
                return generate_scored(self.model, tokenizer, sources, max_new_tokens, num_beams,
                                       adapter_names=adapter_names, **extra)
            # one adapter: the plain active-adapter path, without PEFT's per-row adapter routing
            with self.using(names[0]) as model:
                return generate_scored(model, tokenizer, sources, max_new_tokens, num_beams, **extra)
