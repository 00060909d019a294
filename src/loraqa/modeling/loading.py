"""Tokenizer and base model: from the hub or a local folder, safetensors only, dtype, device, optional 8/4-bit."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from loraqa import optional
from loraqa.errors import LoraqaError, option
from loraqa.hub import looks_like_path, use_cache_only_if_offline
from loraqa.modeling import attention as fused_attention
from loraqa.modeling.precision import FP16_UNSAFE

log = logging.getLogger("loraqa")

def _load_error(name: str, exc: Exception, online: bool) -> LoraqaError:
    msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    if looks_like_path(name):
        if not Path(name).expanduser().exists():
            return LoraqaError(f"model path not found: {name}; pass a local model directory with {option('model')}")
        return LoraqaError(f"{name} is not a loadable model directory ({msg}); it needs config.json, weights "
                           "and tokenizer files, as written by save_pretrained")
    if not online:
        return LoraqaError(f"could not load model '{name}': the Hugging Face Hub is unreachable and the model is "
                           f"not in the local cache; pass a local model directory with {option('model')}")
    return LoraqaError(f"could not load model '{name}' ({msg}); check the name or pass {option('model')}")


def load_config_only(name: str):
    online = use_cache_only_if_offline()
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name)
    except Exception as exc:  # noqa: BLE001 - many loader exception types mean the same thing here
        raise _load_error(name, exc, online) from None


def load_seq2seq_config(name: str):
    """The model's config, refusing anything that is not an encoder-decoder."""
    config = load_config_only(name)
    if not getattr(config, "is_encoder_decoder", False):
        raise LoraqaError(f"{name} is a {config.model_type} model, not an encoder-decoder (seq2seq) model; "
                          "loraqa needs an AutoModelForSeq2SeqLM such as google/flan-t5-small")
    return config


def load_tokenizer(name: str):
    online = use_cache_only_if_offline()
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name)
    except Exception as exc:  # noqa: BLE001
        raise _load_error(name, exc, online) from None
    if not getattr(tok, "is_fast", False):
        raise LoraqaError(f"the tokenizer of {name} is not a fast tokenizer; loraqa needs offsets to keep answers "
                          "inside the source window (install `tokenizers` and save a fast tokenizer)")
    return tok


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def refuse_pickle(folder: str | Path, what: str, allow_pickle: bool, any_present: bool = False) -> None:
    """Pickle checkpoints execute code when loaded: only safetensors unless the user opts in.

    any_present=False (a base model, loaded with use_safetensors=True): refused when the folder
    holds pickle weights and no safetensors, since nothing else could be loaded. any_present=True
    (an adapter: PEFT falls back to adapter_model.bin by itself): refused whenever a pickle
    weight file is there at all."""
    folder = Path(folder).expanduser()
    if allow_pickle or not folder.is_dir():
        return
    files = [p.name for p in folder.iterdir() if p.is_file()]
    pickles = sorted(f for f in files if f.endswith(PICKLE_SUFFIXES))
    if not pickles or (not any_present and any(f.endswith(".safetensors") for f in files)):
        return
    held = "holds pickle weights" if any_present else "holds only pickle weights"
    raise LoraqaError(f"{what} {folder} {held} ({pickles[0]}), which can run arbitrary code when loaded; convert "
                      f"it to safetensors, or if you trust the file pass {option('allow_pickle')}")


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
        model = AutoModelForSeq2SeqLM.from_pretrained(name, dtype=weights, **kwargs)
    except LoraqaError:
        raise
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise LoraqaError(f"{name} ({config.model_type}) has no sequence-to-sequence LM head; "
                              "use an AutoModelForSeq2SeqLM checkpoint such as google/flan-t5-small") from None
        raise _load_error(name, exc, online) from None
    except Exception as exc:  # noqa: BLE001
        raise _load_error(name, exc, online) from None
    if quantization is None:
        model.to(device)
    return model


def quantization_config(kind: str, model_type: str):
    if not torch.cuda.is_available():
        raise LoraqaError(f"model.quantization={kind} needs a CUDA GPU (bitsandbytes); this machine has none. "
                          "Set model.quantization=none")
    optional.check("bitsandbytes", f"model.quantization={kind}", "or set model.quantization=none")
    from transformers import BitsAndBytesConfig

    # flan-t5 generates nonsense in 8-bit unless its `wo` layers stay fp32 (transformers #20287).
    skip = ["wo", "lm_head"] if model_type in FP16_UNSAFE else ["lm_head"]
    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
                              if torch.cuda.is_bf16_supported() else torch.float32, llm_int8_skip_modules=skip)


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


