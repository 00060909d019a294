"""Tokenizer + base model (dtype, device, optional 8/4-bit), then LoRA through PEFT."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from loraqa.errors import LoraqaError
from loraqa.hub import looks_like_path, use_cache_only_if_offline

log = logging.getLogger("loraqa")

# T5-family models overflow in fp16 (inf/NaN losses: transformers #4586, #9295, #23918).
FP16_UNSAFE = {"t5", "mt5", "umt5", "longt5", "switch_transformers"}


def cpu_has_bf16() -> bool:
    """bf16 is fast on CPUs with AVX512-BF16 or AMX; elsewhere it is emulated and slow."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def resolve_device(choice: str) -> str:
    if choice == "cuda" and not torch.cuda.is_available():
        raise LoraqaError("model.device=cuda but no CUDA GPU is visible; use model.device=auto or cpu "
                          "(run `loraqa doctor` to see what torch finds)")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def bf16_supported(device: str) -> bool:
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


def resolve_dtype(choice: str, device: str, model_type: str) -> str:
    """'fp32' or 'bf16' (the precision the Trainer autocasts to); fp16 is refused for T5."""
    if choice == "fp16":
        if model_type in FP16_UNSAFE:
            raise LoraqaError(f"model.dtype=fp16 is refused for {model_type}: T5 activations overflow fp16 and "
                              "training ends in NaN losses; use model.dtype=bf16 (Ampere+ GPUs, recent CPUs) or fp32")
        return "fp16"
    if choice == "bf16":
        if not bf16_supported(device):
            raise LoraqaError(f"model.dtype=bf16 but this {device} has no bf16 support; use model.dtype=fp32 or auto")
        return "bf16"
    if choice == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return "fp32"


def _load_error(name: str, exc: Exception, online: bool) -> LoraqaError:
    msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    if looks_like_path(name):
        if not Path(name).expanduser().exists():
            return LoraqaError(f"model path not found: {name}; pass a local model directory with --model PATH")
        return LoraqaError(f"{name} is not a loadable model directory ({msg}); it needs config.json, weights "
                           "and tokenizer files, as written by save_pretrained")
    if not online:
        return LoraqaError(f"could not load model '{name}': the Hugging Face Hub is unreachable and the model is "
                           "not in the local cache; pass a local model directory with --model PATH")
    return LoraqaError(f"could not load model '{name}' ({msg}); check the name or pass --model PATH")


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


def refuse_pickle(folder: str | Path, what: str, allow_pickle: bool) -> None:
    """Pickle checkpoints execute code when loaded: only safetensors unless the user opts in."""
    folder = Path(folder).expanduser()
    if allow_pickle or not folder.is_dir():
        return
    files = [p.name for p in folder.iterdir() if p.is_file()]
    if any(f.endswith(".safetensors") for f in files):
        return
    pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise LoraqaError(f"{what} {folder} holds only pickle weights ({pickles[0]}), which can run arbitrary code "
                          "when loaded; convert it to safetensors, or if you trust the file pass --allow-pickle "
                          "(model.allow_pickle=true)")


def load_base_model(name: str, dtype: str, device: str, quantization: str = "none", allow_pickle: bool = False):
    """The frozen base model. With dtype bf16 the frozen weights are stored in bf16 (LoRA's own
    weights stay fp32 and autocast handles the mix): fp32 weights under autocast would be
    re-cast to bf16 at every matmul of every step (measured slower than plain fp32 at batch 1)."""
    online = use_cache_only_if_offline()
    from transformers import AutoModelForSeq2SeqLM

    config = load_seq2seq_config(name)
    refuse_pickle(name, "model", allow_pickle)
    kwargs: dict = {} if allow_pickle else {"use_safetensors": True}
    if quantization != "none":
        kwargs["quantization_config"] = quantization_config(quantization, config.model_type)
        kwargs["device_map"] = {"": 0}
    try:
        weights = torch.bfloat16 if dtype == "bf16" and quantization == "none" else torch.float32
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
    if quantization == "none":
        model.to(device)
    return model


def quantization_config(kind: str, model_type: str):
    if not torch.cuda.is_available():
        raise LoraqaError(f"model.quantization={kind} needs a CUDA GPU (bitsandbytes); this machine has none. "
                          "Set model.quantization=none")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise LoraqaError(f"model.quantization={kind} needs bitsandbytes; install it with "
                          "`pip install 'loraqa[gpu]'` or set model.quantization=none") from None
    from transformers import BitsAndBytesConfig

    # flan-t5 generates nonsense in 8-bit unless its `wo` layers stay fp32 (transformers #20287).
    skip = ["wo", "lm_head"] if model_type in FP16_UNSAFE else ["lm_head"]
    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
                              if torch.cuda.is_bf16_supported() else torch.float32, llm_int8_skip_modules=skip)


def configure_base(model, dropout: float | None, attention: str, device: str) -> None:
    """Base-model dropout and attention kernel, set on every sub-config (T5 keeps one per stack)."""
    from loraqa import attention as fused_attention

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


def linear_module_names(model) -> list[str]:
    """Last name component of every linear layer: what LoRA target_modules can name."""
    names = set()
    for full, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) or type(mod).__name__ in ("Linear8bitLt", "Linear4bit"):
            names.add(full.rsplit(".", 1)[-1])
    return sorted(names)


def check_target_modules(model, targets: list[str]) -> None:
    available = linear_module_names(model)
    missing = [t for t in targets if t not in available]
    if missing:
        raise LoraqaError(f"lora.target_modules {missing} not found in this model; its linear layers are: "
                          f"{', '.join(available)} (e.g. --set lora.target_modules=[q,v])")


def add_lora(model, lora_cfg, gradient_checkpointing: bool, quantized: bool = False, fast_kernels: bool = True):
    from peft import LoraConfig, TaskType, get_peft_model

    check_target_modules(model, lora_cfg.target_modules)
    if quantized:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        # A frozen base gives checkpointed blocks inputs without grad: LoRA would receive none
        # (peft #80, #1142). Non-reentrant checkpointing plus input grads fixes both paths.
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    # The KV cache is useless in training and clashes with checkpointing; T5 keeps a config per stack.
    for module in model.modules():
        if hasattr(module, "config") and hasattr(module.config, "use_cache"):
            module.config.use_cache = False
    config = LoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM,
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=list(lora_cfg.target_modules),
        bias=lora_cfg.bias,
        use_rslora=lora_cfg.use_rslora,
        use_dora=lora_cfg.use_dora,
    )
    from loraqa.fused import speed_up_training

    peft_model = get_peft_model(model, config)
    if fast_kernels:
        speed_up_training(peft_model)
    return peft_model


def parameter_counts(model) -> dict:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total, "trainable_percent": round(100 * trainable / max(total, 1), 4)}
