"""Generate answers: batched, length-sorted, in inference mode, with an explicit length limit."""

from __future__ import annotations

from typing import Iterable

import torch

from loraqa.errors import LoraqaError


def prepare_for_inference(model, dtype: str):
    """Inference in bf16 casts the weights once: autocast would re-cast fp32 weights at every
    matmul of every decoding step (measured 1.3-1.6x slower on CPU). T5 is safe in bf16 (same
    exponent range as fp32); it is fp16 that overflows."""
    model.eval()
    if dtype == "bf16":
        model.to(torch.bfloat16)
    return model


def encode_sources(tokenizer, rows: list[dict], template: str, max_source_length: int) -> list[list[int]]:
    """Token ids of each question's source text, passages kept from their start."""
    from loraqa.features import FeatureCounts, encode_source

    counts = FeatureCounts()
    return [encode_source(tokenizer, row, template, max_source_length, keep_answer=False, counts=counts)
            for row in rows]


@torch.inference_mode()
def generate_ids(model, tokenizer, sources: list[list[int]], max_new_tokens: int, batch_size: int,
                 num_beams: int = 1, progress: Iterable | None = None, autocast_bf16: bool = False,
                 **generate_kwargs) -> list[str]:
    """Answers in the input order. Sorting by length keeps padding (and wasted compute) small;
    each batch's tokens are decoded on the host at once so nothing piles up on the device."""
    device = next(model.parameters()).device
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]), reverse=True)
    answers: list[str] = [""] * len(sources)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = tokenizer.pad({"input_ids": [sources[i] for i in idx]}, return_tensors="pt").to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
            # use_cache explicitly: training turns the model's KV cache off, and generating
            # without it recomputes every previous step
            out = model.generate(**batch, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                                 use_cache=True, **generate_kwargs)
        texts = tokenizer.batch_decode(out.cpu(), skip_special_tokens=True)
        for i, text in zip(idx, texts):
            answers[i] = text.strip()
        if progress is not None:
            progress(len(idx))
    return answers


def generate_answers(model, tokenizer, rows: list[dict], template: str, max_source_length: int,
                     max_new_tokens: int, batch_size: int = 32, num_beams: int = 1, progress=None,
                     autocast_bf16: bool = False) -> list[str]:
    was_training = model.training
    model.eval()
    try:
        sources = encode_sources(tokenizer, rows, template, max_source_length)
        return generate_ids(model, tokenizer, sources, max_new_tokens, batch_size, num_beams, progress, autocast_bf16)
    finally:
        model.train(was_training)


BASE = "base"  # the name that means "no adapter"


class Answerer:
    """One base model, many adapters: renders each question with its adapter's template and
    answers mixed-adapter batches in one generate() call (PEFT `adapter_names=`)."""

    def __init__(self, adapters: dict[str, str] | None = None, base_model: str | None = None,
                 device: str = "auto", dtype: str = "auto", allow_pickle: bool = False):
        import threading

        from loraqa import modeling
        from loraqa.evaluate import resolve_adapter

        adapters = dict(adapters or {})
        if BASE in adapters:
            raise LoraqaError(f"'{BASE}' is reserved for the base model without an adapter; name the adapter otherwise")
        refs = {name: resolve_adapter(path) for name, path in adapters.items()}
        if base_model is None:
            if not refs:
                raise LoraqaError("give at least one adapter, or a base model with --model")
            base_model = next(iter(refs.values())).config.model.name
        self.base_model, self.allow_pickle = base_model, allow_pickle
        self.device = modeling.resolve_device(device)
        config = modeling.load_seq2seq_config(base_model)
        self.dtype = modeling.resolve_dtype(dtype, self.device, config.model_type)
        self.model = modeling.load_base_model(base_model, self.dtype, self.device, allow_pickle=allow_pickle)
        first = next(iter(refs.values()), None)
        self.tokenizer = modeling.load_tokenizer(str(first.adapter_dir) if first else base_model)
        self.configs: dict = {}
        self.paths: dict[str, str] = {}
        self.lock = threading.RLock()
        for name, ref in refs.items():
            self._attach(name, ref)
        prepare_for_inference(self.model, self.dtype)

    def _attach(self, name: str, ref) -> None:
        from peft import PeftModel

        from loraqa.modeling import refuse_pickle

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
        from loraqa.evaluate import resolve_adapter

        with self.lock:
            if name in self.configs or name == BASE:
                raise LoraqaError(f"an adapter named '{name}' is already loaded; delete it first or pick another name")
            self._attach(name, resolve_adapter(path))
            prepare_for_inference(self.model, self.dtype)

    def remove_adapter(self, name: str) -> None:
        with self.lock:
            if name not in self.configs:
                raise LoraqaError(f"no adapter named '{name}' is loaded")
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
                raise LoraqaError(f"unknown adapter '{name}'; loaded: {', '.join(self.names)}")
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

    def _generate(self, sources: list[list[int]], names: list[str], max_new: int, num_beams: int) -> list[str]:
        from contextlib import nullcontext

        if not self.configs:  # a bare base model
            return generate_ids(self.model, self.tokenizer, sources, max_new, len(sources), num_beams)
        if len(set(names)) > 1:  # mixed batch (greedy only, see answer())
            adapter_names = ["__base__" if n == BASE else n for n in names]
            return generate_ids(self.model, self.tokenizer, sources, max_new, len(sources), adapter_names=adapter_names)
        # one adapter: the plain active-adapter path, without PEFT's per-row adapter routing
        if names[0] == BASE:
            context = self.model.disable_adapter()
        else:
            self.model.set_adapter(names[0])
            context = nullcontext()
        with context:
            return generate_ids(self.model, self.tokenizer, sources, max_new, len(sources), num_beams)
