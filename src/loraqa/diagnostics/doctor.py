"""`loraqa doctor`: what this machine offers for training, and whether a preset fits.

The findings come back as data (`Diagnosis`); the command line draws them."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field

import torch

from loraqa.diagnostics.architectures import KNOWN_ARCHITECTURES
from loraqa.diagnostics.memory_estimate import architecture_of, estimate_training_memory
from loraqa.modeling.precision import cpu_has_bf16


@dataclass
class Diagnosis:
    facts: list[tuple[str, str]] = field(default_factory=list)  # (what, finding); findings may hold Rich markup
    warnings: list[str] = field(default_factory=list)
    memory: str = ""  # the preset's estimated peak, and whether it fits
    tips: list[str] = field(default_factory=list)  # ways to make it fit, when it does not
    estimate: dict = field(default_factory=dict)  # the estimate's figures (empty: the model could not be sized)


def _available_ram_gb() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) for line in fh}
        return info.get("MemAvailable", 0) / 2**20
    except OSError:
        return None


def diagnose(cfg, gpu_memory_gb: float | None = None) -> Diagnosis:
    out = Diagnosis()
    facts = out.facts
    facts.append(("torch", torch.__version__))
    facts.append(("CUDA (torch build)", str(torch.version.cuda)))
    cuda = torch.cuda.is_available()
    free_gb = None
    if cuda:
        free, total = torch.cuda.mem_get_info(0)
        free_gb = free / 2**30
        facts.append(("GPU", torch.cuda.get_device_name(0)))
        facts.append(("GPU memory", f"{free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB"))
        facts.append(
            ("bf16 on GPU", "yes" if torch.cuda.is_bf16_supported() else "no (use fp32; fp16 is unsafe for T5)")
        )
    else:
        facts.append(("GPU", "[bold red]none: training will run on the CPU[/] (slow for flan-t5-base and larger)"))
    facts.append(("CPU threads", f"{torch.get_num_threads()} of {os.cpu_count()} cores"))
    facts.append(("bf16 on CPU", "yes (AVX512-BF16/AMX)" if cpu_has_bf16() else "no"))
    ram = _available_ram_gb()
    if ram is not None:
        facts.append(("RAM available", f"{ram:.1f} GiB"))
    bnb = importlib.util.find_spec("bitsandbytes") is not None
    facts.append(
        ("bitsandbytes", ("installed" if bnb else "not installed") + ("" if cuda else " (8/4-bit needs CUDA)"))
    )
    if not cuda:
        out.warnings.append(
            "no CUDA GPU visible; `loraqa train` will fall back to the CPU. "
            "If you have a GPU, check the driver and that torch was installed with CUDA."
        )

    arch = architecture_of(cfg.model.name)
    if arch is None:
        out.memory = (
            f"memory: cannot size {cfg.model.name} without its config (known offline: "
            f"{', '.join(KNOWN_ARCHITECTURES)}); pass --model PATH"
        )
        return out
    device = "cuda" if cuda or gpu_memory_gb else "cpu"
    dtype = cfg.model.dtype
    if dtype == "auto":
        if gpu_memory_gb:
            dtype = "fp32"  # a hypothetical card: assume the worst case (no bf16, e.g. a GTX 1650)
        else:
            dtype = "bf16" if (torch.cuda.is_bf16_supported() if cuda else cpu_has_bf16()) else "fp32"
    est = estimate_training_memory(arch, cfg, dtype=dtype, device=device)
    budget = gpu_memory_gb or (free_gb if cuda else ram)
    verdict = ""
    if budget is not None:
        verdict = " - fits" if est["total_gb"] < budget * 0.9 else " - [bold red]does not fit[/]"
    out.memory = (
        f"preset '{cfg.preset}' ({cfg.model.name}, batch {cfg.train.batch_size}, source "
        f"{cfg.data.max_source_length} tokens, {dtype}, checkpointing "
        f"{'on' if cfg.train.gradient_checkpointing else 'off'}): estimated peak "
        f"{est['total_gb']:.2f} GiB on {device}" + (f" ({gpu_memory_gb:g} GiB card)" if gpu_memory_gb else "") + verdict
    )
    if budget is not None and est["total_gb"] >= budget * 0.9:
        out.tips = list(est["advice"])
    out.estimate = est | {"budget_gb": budget, "dtype": dtype, "device": device}
    return out
