"""The answering engine: one base model, many adapters, mixed-adapter batches."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path

from peft import PeftModel

from loraqa.artifacts import AdapterRef, resolve_adapter
from loraqa.errors import AdapterExists, AdapterNotFound, LoraqaError
from loraqa.inference.generation import encode_sources, generate_ids, prepare_for_inference
from loraqa.modeling.loading import load_base_model, load_seq2seq_config, load_tokenizer, refuse_pickle
from loraqa.modeling.precision import resolve_device, resolve_dtype

BASE = "base"  # the name that means "no adapter"


class Answerer:
    """One base model, many adapters: renders each question with its adapter's template and
    answers mixed-adapter batches in one generate() call (PEFT `adapter_names=`)."""

    def __init__(self, adapters: dict[str, str | Path | AdapterRef] | None = None, base_model: str | None = None,
                 device: str = "auto", dtype: str = "auto", allow_pickle: bool = False):
        """adapters: name -> a run directory or adapter folder, or an AdapterRef (whose config,
        e.g. with eval-time overrides, is then used as given)."""
        adapters = dict(adapters or {})
        if BASE in adapters:
            raise LoraqaError(f"'{BASE}' is reserved for the base model without an adapter; name the adapter otherwise")
        refs = {name: p if isinstance(p, AdapterRef) else resolve_adapter(p) for name, p in adapters.items()}
        if base_model is None:
            if not refs:
                raise LoraqaError("give at least one adapter, or a base model with --model")
            base_model = next(iter(refs.values())).config.model.name
        self.base_model, self.allow_pickle = base_model, allow_pickle
        self.device = resolve_device(device)
        config = load_seq2seq_config(base_model)
        self.dtype = resolve_dtype(dtype, self.device, config.model_type)
        self.model = load_base_model(base_model, self.dtype, self.device, allow_pickle=allow_pickle)
        first = next(iter(refs.values()), None)
        self.tokenizer = load_tokenizer(str(first.adapter_dir) if first else base_model)
        self.configs: dict = {}
        self.paths: dict[str, str] = {}
        self.lock = threading.RLock()
        for name, ref in refs.items():
            self._attach(name, ref)
        prepare_for_inference(self.model, self.dtype)

    def _attach(self, name: str, ref: AdapterRef) -> None:
        refuse_pickle(ref.adapter_dir, "adapter", self.allow_pickle)
        try:
            if not self.configs and not hasattr(self.model, "peft_config"):
                self.model = PeftModel.from_pretrained(self.model, str(ref.adapter_dir), adapter_name=name)
            else:
                self.model.load_adapter(str(ref.adapter_dir), adapter_name=name)
        except Exception as exc:  # noqa: BLE001 - shape mismatches, missing files: all "does not fit"
            raise LoraqaError(f"adapter {ref.adapter_dir} does not fit the base model {self.base_model} "
                              f"({str(exc).splitlines()[0][:160]}); pass the base it was trained on with --model") from None
        self.configs[name] = ref.config
        self.paths[name] = str(ref.adapter_dir)

    @property
    def names(self) -> list[str]:
        return list(self.configs) + [BASE]

    def add_adapter(self, name: str, path: str) -> None:
        with self.lock:
            if name in self.configs or name == BASE:
                raise AdapterExists(f"an adapter named '{name}' is already loaded; delete it first or pick another name")
            self._attach(name, resolve_adapter(path))
            prepare_for_inference(self.model, self.dtype)

    def remove_adapter(self, name: str) -> None:
        with self.lock:
            if name not in self.configs:
                raise AdapterNotFound(f"no adapter named '{name}' is loaded")
            self.model.delete_adapter(name)
            del self.configs[name], self.paths[name]

    def default_adapter(self) -> str:
        return next(iter(self.configs), BASE)

    def _render(self, req: dict) -> tuple[list[int], int, str]:
        # "like": render as that adapter would (the base model scored on an adapter's prompts)
        name = req.get("like") or req.get("adapter") or self.default_adapter()
        if name not in self.configs:
            template = "squad" if req.get("context") else "question"
            max_source, max_new, no_answer = 512, 32, None
        else:
            c = self.configs[name]
            template, max_source, max_new = c.data.template, c.data.max_source_length, c.eval.max_new_tokens
            no_answer = c.data.unanswerable_text
        row = {"question": req["question"], "context": req.get("context") or "", "answers": {"text": []}}
        ids = encode_sources(self.tokenizer, [row], template, max_source)[0]
        return ids, max_new, no_answer

    def answer(self, requests: list[dict], batch_size: int = 16, progress=None, num_beams: int = 1) -> list[str]:
        """Answers for [{question, context?, adapter?}], in order. Unknown adapters raise.

        Greedy batches may mix adapters (PEFT adapter_names); beam search with mixed adapters
        needs a recent PEFT (peft #2283), so beams run one adapter per batch."""
        for r in requests:
            name = r.get("adapter") or self.default_adapter()
            if name != BASE and name not in self.configs:
                raise AdapterNotFound(f"unknown adapter '{name}'; loaded: {', '.join(self.names)}")
        with self.lock:
            rendered = [self._render(r) for r in requests]
            names = [(r.get("adapter") or self.default_adapter()) for r in requests]
            order = sorted(range(len(requests)), key=lambda i: len(rendered[i][0]), reverse=True)
            groups = [order] if num_beams == 1 else [[i for i in order if names[i] == n] for n in dict.fromkeys(names)]
            answers = [""] * len(requests)
            for group in groups:
                for start in range(0, len(group), batch_size):
                    idx = group[start:start + batch_size]
                    texts = self._generate([rendered[i][0] for i in idx], [names[i] for i in idx],
                                           max(rendered[i][1] for i in idx), num_beams)
                    for i, text in zip(idx, texts):
                        answers[i] = "" if text == rendered[i][2] else text
                    if progress is not None:
                        progress(len(idx))
            return answers

    @contextmanager
    def using(self, name: str):
        """The model with only adapter `name` active (BASE: none), held under the lock."""
        with self.lock:
            if not self.configs:  # a bare base model
                yield self.model
            elif name == BASE:
                with self.model.disable_adapter():
                    yield self.model
            else:
                self.model.set_adapter(name)
                yield self.model

    def _generate(self, sources: list[list[int]], names: list[str], max_new: int, num_beams: int) -> list[str]:
        if self.configs and len(set(names)) > 1:  # mixed batch (greedy only, see answer())
            adapter_names = ["__base__" if n == BASE else n for n in names]
            return generate_ids(self.model, self.tokenizer, sources, max_new, len(sources), adapter_names=adapter_names)
        # one adapter: the plain active-adapter path, without PEFT's per-row adapter routing
        with self.using(names[0]) as model:
            return generate_ids(model, self.tokenizer, sources, max_new, len(sources), num_beams)
