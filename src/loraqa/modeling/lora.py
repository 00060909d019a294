"""LoRA through PEFT: target checks, checkpointing that still reaches the adapter, loraqa's fused kernels."""

from __future__ import annotations

import torch

from loraqa.errors import LoraqaError, setting
from loraqa.modeling.fused import speed_up_training


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
        raise LoraqaError(
            f"lora.target_modules {missing} not found in this model; its linear layers are: "
            f"{', '.join(available)} (e.g. {setting('lora.target_modules=[q,v]')})"
        )


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
    peft_model = get_peft_model(model, config)
    if fast_kernels:
        speed_up_training(peft_model)
    return peft_model


def parameter_counts(model) -> dict:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total, "trainable_percent": round(100 * trainable / max(total, 1), 4)}
