"""Base model: from the hub or a local folder, safetensors only, dtype, device, optional 8/4-bit."""

from __future__ import annotations

import logging

import torch

from loraqa import optional
from loraqa.errors import LoraqaError
from loraqa.hub import looks_like_path, use_cache_only_if_offline
from loraqa.modeling import attention as fused_attention
from loraqa.modeling.files import load_error, refuse_pickle, without_progress_bars
from loraqa.modeling.precision import FP16_UNSAFE

log = logging.getLogger("loraqa")


def load_config_only(name: str):
    online = use_cache_only_if_offline()
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name)
    except Exception as exc:  # noqa: BLE001 - many loader exception types mean the same thing here
        raise load_error(name, exc, online) from None


def load_seq2seq_config(name: str):
    """The model's config, refusing anything that is not an encoder-decoder."""
    config = load_config_only(name)
    if not getattr(config, "is_encoder_decoder", False):
        raise LoraqaError(
            f"{name} is a {config.model_type} model, not an encoder-decoder (seq2seq) model; "
            "loraqa needs an AutoModelForSeq2SeqLM such as google/flan-t5-small"
        )
    return config


def load_base_model(name: str, dtype: str, device: str, allow_pickle: bool = False, config=None, quantization=None):
    """The frozen base model. With dtype bf16 the frozen weights are stored in bf16 (LoRA's own
    weights stay fp32 and autocast handles the mix): fp32 weights under autocast would be
    re-cast to bf16 at every matmul of every step (measured slower than plain fp32 at batch 1).
    config: its seq2seq config when the caller has read it already; quantization: the
    bitsandbytes config from quantization_config() for an 8/4-bit base (CUDA)."""
    online = use_cache_only_if_offline()
    from transformers import AutoModelForSeq2SeqLM

    config = config or load_seq2seq_config(name)
    refuse_pickle(name, "model", allow_pickle)
    kwargs: dict = {} if allow_pickle else {"use_safetensors": True}
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": 0}
    try:
        weights = torch.bfloat16 if dtype == "bf16" and quantization is None else torch.float32
        with without_progress_bars(local=looks_like_path(name)):
            model = AutoModelForSeq2SeqLM.from_pretrained(name, dtype=weights, **kwargs)
    except LoraqaError:
        raise
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise LoraqaError(
                f"{name} ({config.model_type}) has no sequence-to-sequence LM head; "
                "use an AutoModelForSeq2SeqLM checkpoint such as google/flan-t5-small"
            ) from None
        raise load_error(name, exc, online) from None
    except Exception as exc:  # noqa: BLE001 - the hub and the loaders raise many types; load_error says which case it is
        raise load_error(name, exc, online) from None
    if quantization is None:
        model.to(device)
    return model


def quantization_config(kind: str, model_type: str):
    if not torch.cuda.is_available():
        raise LoraqaError(
            f"model.quantization={kind} needs a CUDA GPU (bitsandbytes); this machine has none. "
            "Set model.quantization=none"
        )
    optional.check("bitsandbytes", f"model.quantization={kind}", "or set model.quantization=none")
    from transformers import BitsAndBytesConfig

    # flan-t5 generates nonsense in 8-bit unless its `wo` layers stay fp32 (transformers #20287).
    skip = ["wo", "lm_head"] if model_type in FP16_UNSAFE else ["lm_head"]
    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32,
        llm_int8_skip_modules=skip,
    )


def configure_base(model, dropout: float | None, attention: str, device: str) -> None:
    """Base-model dropout and attention kernel, set on every sub-config (T5 keeps one per stack)."""
    impl = ("sdpa" if device == "cuda" else "fused") if attention == "auto" else attention
    if impl == "fused":
        fused_attention.register()
        impl = fused_attention.NAME
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is None:
            continue
        if hasattr(config, "_attn_implementation"):
            config._attn_implementation = impl
        if dropout is not None and hasattr(config, "dropout_rate"):
            config.dropout_rate = dropout
        if dropout is not None and isinstance(getattr(module, "dropout", None), float):
            module.dropout = dropout  # attention modules keep the rate as a float
    if dropout is not None:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = dropout
