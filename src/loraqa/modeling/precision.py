"""Where to run (CPU or CUDA) and in which precision: bf16 where the hardware has it, fp32 elsewhere, never fp16 for T5."""

from __future__ import annotations

import os

import torch

from loraqa.errors import LoraqaError

# T5-family models overflow in fp16 (inf/NaN losses: transformers #4586, #9295, #23918).
FP16_UNSAFE = {"t5", "mt5", "umt5", "longt5", "switch_transformers"}


def cpu_has_bf16() -> bool:
    """bf16 is fast on CPUs with AVX512-BF16 or AMX; elsewhere it is emulated and slow.
    LORAQA_CPU_BF16=0 makes loraqa treat this CPU as one without (what an AVX2-only machine does;
    the tests use it to check that path here), =1 as one with."""
    forced = os.environ.get("LORAQA_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def cpu_precision_note() -> str:
    """Which precision answering and training use on this CPU, and why (for benchmark output)."""
    if cpu_has_bf16():
        return "bf16: this CPU has AVX512-BF16 or AMX"
    return "fp32: this CPU has no AVX512-BF16 or AMX, where bf16 is emulated and slower"


def resolve_device(choice: str) -> str:
    if choice == "cuda" and not torch.cuda.is_available():
        raise LoraqaError(
            "model.device=cuda but no CUDA GPU is visible; use model.device=auto or cpu "
            "(run `loraqa doctor` to see what torch finds)"
        )
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
            raise LoraqaError(
                f"model.dtype=fp16 is refused for {model_type}: T5 activations overflow fp16 and "
                "training ends in NaN losses; use model.dtype=bf16 (Ampere+ GPUs, recent CPUs) or fp32"
            )
        return "fp16"
    if choice == "bf16":
        if not bf16_supported(device):
            raise LoraqaError(f"model.dtype=bf16 but this {device} has no bf16 support; use model.dtype=fp32 or auto")
        return "bf16"
    if choice == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return "fp32"
