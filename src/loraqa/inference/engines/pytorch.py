"""The PyTorch engine: one base model in memory, LoRA adapters attached by name (PEFT).

Batches may mix adapters: greedy decoding routes each row through its own adapter in one
generate() call (PEFT `adapter_names=`, each LoRA layer's rows in two batched matmuls:
modeling/mixed_lora.py); beam search with mixed adapters needs a recent PEFT
(peft #2283), so its capabilities say the Answerer must send beams one adapter per batch.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from typing import cast

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from safetensors import safe_open

from loraqa.adapters.folder import AdapterRef
from loraqa.adapters.names import ENGINE_BASE
from loraqa.errors import LoraqaError, option
from loraqa.inference.engines.base import BASE, Capabilities, Generated, GenerationBatch
from loraqa.inference.generation import generate_scored, prepare_for_inference
from loraqa.modeling.files import load_tokenizer
from loraqa.modeling.loading import load_base_model, load_seq2seq_config
from loraqa.modeling.mixed_lora import forget_stacks, use_gathered_mixed_batches
from loraqa.modeling.precision import resolve_device, resolve_dtype


class TorchEngine:
    kind = "pytorch"
    capabilities = Capabilities(base_model=True, teacher_forcing=True, extractive=True, mixed_beam_batches=False)

    def __init__(
        self, tokenizer, base_model: str, device: str = "auto", dtype: str = "auto", allow_pickle: bool = False
    ):
        self.tokenizer, self.base_model = tokenizer, base_model
        self.device = resolve_device(device)
        config = load_seq2seq_config(base_model)
        self.dtype = resolve_dtype(dtype, self.device, config.model_type)
        self.model = load_base_model(base_model, self.dtype, self.device, allow_pickle=allow_pickle, config=config)
        self.adapters: set[str] = set()
        self.lock = threading.RLock()
        prepare_for_inference(self.model, self.dtype)

    @classmethod
    def create(cls, tokenizer, base_model: str | None, device: str, dtype: str, allow_pickle: bool) -> TorchEngine:
        if base_model is None:
            raise LoraqaError(f"give at least one adapter, or a base model with {option('model')}")
        return cls(tokenizer, base_model, device, dtype, allow_pickle)

    @classmethod
    def read_tokenizer(cls, folder: str):
        return load_tokenizer(folder)

    @classmethod
    def base_in(cls, ref: AdapterRef) -> str | None:
        return ref.config.model.name if ref.kind == "lora" else None

    def _does_not_fit(self, ref: AdapterRef, why: str) -> LoraqaError:
        return LoraqaError(
            f"adapter {ref.adapter_dir} does not fit the base model {self.base_model} "
            f"({why}); pass the base it was trained on with {option('model')}"
        )

    def check(self, ref: AdapterRef) -> None:
        """Read the adapter's config and weight shapes (not its weights) and check every target
        layer exists in the base with matching sizes, before anything touches the live model."""
        if ref.kind != "lora":
            raise LoraqaError(
                f"{ref.adapter_dir} is a merged model exported for CTranslate2; the PyTorch engine "
                f"attaches LoRA adapters (answer with it through {option('engine')} ctranslate2)"
            )
        try:
            config = json.loads((ref.adapter_dir / "adapter_config.json").read_text())
        except (OSError, ValueError) as exc:
            raise self._does_not_fit(ref, f"unreadable adapter_config.json: {type(exc).__name__}") from None
        if not isinstance(config, dict) or config.get("peft_type", "LORA") != "LORA":
            kind = config.get("peft_type") if isinstance(config, dict) else "unreadable"
            raise self._does_not_fit(ref, f"it is a {kind} adapter, not LoRA")
        weights = ref.adapter_dir / "adapter_model.safetensors"
        if not weights.is_file():
            return  # pickle weights (allowed by the user): PEFT's own load checks them
        # base_model.model, not get_base_model(): that reads the active adapter, which may be one
        # just detached
        base = self.model.base_model.model if isinstance(self.model, PeftModel) else self.model
        layers = dict(cast(torch.nn.Module, base).named_modules())
        ranks = {**{"": config.get("r")}, **(config.get("rank_pattern") or {})}
        try:
            with safe_open(str(weights), framework="pt") as f:
                shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118 - safe_open has keys(), no __iter__
        except Exception as exc:  # noqa: BLE001 - a damaged file raises several types
            raise self._does_not_fit(
                ref, f"unreadable adapter_model.safetensors: {str(exc).splitlines()[0][:120]}"
            ) from None
        for key, shape in shapes.items():
            if ".lora_A." not in key and ".lora_B." not in key:
                continue
            path = key.removeprefix("base_model.model.").rsplit(".lora_", 1)[0]
            layer = layers.get(path)
            if isinstance(layer, LoraLayer):  # already wrapped for another adapter
                layer = layer.base_layer
            if layer is None or not hasattr(layer, "in_features"):
                raise self._does_not_fit(ref, f"it adapts layer {path}, which the base model does not have")
            r = next((v for k, v in ranks.items() if k and path.endswith(k)), ranks[""])
            want = (r, layer.in_features) if ".lora_A." in key else (layer.out_features, r)
            if shape != want:
                raise self._does_not_fit(
                    ref,
                    f"{path}: the adapter's {key.rsplit('.', 2)[-2]} is {list(shape)}, "
                    f"the base layer needs {list(want)} (rank {r})",
                )

    def attach(self, name: str, ref: AdapterRef) -> None:
        with self.lock:
            self.check(ref)
            try:
                if not isinstance(self.model, PeftModel):
                    self.model = PeftModel.from_pretrained(self.model, str(ref.adapter_dir), adapter_name=name)
                else:
                    self.model.load_adapter(str(ref.adapter_dir), adapter_name=name)
                prepare_for_inference(self.model, self.dtype)
                use_gathered_mixed_batches(self.model)  # after the cast: the stacks take the weights' dtype
            except Exception as exc:  # noqa: BLE001 - shape mismatches, missing files: all "does not fit"
                if isinstance(self.model, PeftModel) and name in self.model.peft_config:
                    self.model.delete_adapter(name)  # a half-attached adapter must not linger
                raise self._does_not_fit(ref, str(exc).splitlines()[0][:160]) from None
            self.adapters.add(name)

    def detach(self, name: str) -> None:
        with self.lock:
            if name in self.adapters:
                self.model.delete_adapter(name)
                self.adapters.discard(name)
                forget_stacks(self.model)
                if not self.adapters:  # the last one: back to the bare base model, no LoRA layers left
                    self.model = self.model.unload()

    @contextmanager
    def scoring_model(self, name: str):
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

    def generate(self, batch: GenerationBatch) -> list[Generated]:
        names = batch.adapters
        with self.lock:
            if self.adapters and len(set(names)) > 1:  # mixed batch (greedy only)
                adapter_names = [ENGINE_BASE if n == BASE else n for n in names]
                return generate_scored(self.model, self.tokenizer, batch, adapter_names=adapter_names)
            # one adapter: the plain active-adapter path, without PEFT's per-row adapter routing
            with self.scoring_model(names[0]) as model:
                return generate_scored(model, self.tokenizer, batch)
