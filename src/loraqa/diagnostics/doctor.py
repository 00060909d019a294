"""`loraqa doctor`: what this machine offers for training, and whether a preset fits."""

from __future__ import annotations

import importlib.util
import os

import torch
from rich.console import Console
from rich.table import Table

from loraqa.diagnostics.architectures import KNOWN_ARCHITECTURES
from loraqa.diagnostics.memory_estimate import architecture_of, estimate_training_memory
from loraqa.modeling.precision import cpu_has_bf16

console = Console(soft_wrap=True)


def _available_ram_gb() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) for line in fh}
        return info.get("MemAvailable", 0) / 2**20
    except OSError:
        return None


def run_doctor(cfg, gpu_memory_gb: float | None = None) -> dict:
    table = Table(title="loraqa doctor", show_header=False)
    table.add_row("torch", torch.__version__)
    table.add_row("CUDA (torch build)", str(torch.version.cuda))
    cuda = torch.cuda.is_available()
    free_gb = None
    if cuda:
        free, total = torch.cuda.mem_get_info(0)
        free_gb = free / 2**30
        table.add_row("GPU", torch.cuda.get_device_name(0))
        table.add_row("GPU memory", f"{free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB")
        table.add_row(
            "bf16 on GPU", "yes" if torch.cuda.is_bf16_supported() else "no (use fp32; fp16 is unsafe for T5)"
        )
    else:
        table.add_row("GPU", "[bold red]none: training will run on the CPU[/] (slow for flan-t5-base and larger)")
    table.add_row("CPU threads", f"{torch.get_num_threads()} of {os.cpu_count()} cores")
    table.add_row("bf16 on CPU", "yes (AVX512-BF16/AMX)" if cpu_has_bf16() else "no")
    ram = _available_ram_gb()
    if ram is not None:
        table.add_row("RAM available", f"{ram:.1f} GiB")
    bnb = importlib.util.find_spec("bitsandbytes") is not None
    table.add_row("bitsandbytes", ("installed" if bnb else "not installed") + ("" if cuda else " (8/4-bit needs CUDA)"))
    console.print(table)
    if not cuda:
        console.print(
            "[bold yellow]warning:[/] no CUDA GPU visible; `loraqa train` will fall back to the CPU. "
            "If you have a GPU, check the driver and that torch was installed with CUDA."
        )

    arch = architecture_of(cfg.model.name)
    if arch is None:
        console.print(
            f"memory: cannot size {cfg.model.name} without its config (known offline: "
            f"{', '.join(KNOWN_ARCHITECTURES)}); pass --model PATH"
        )
        return {}
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
    console.print(
        f"preset '{cfg.preset}' ({cfg.model.name}, batch {cfg.train.batch_size}, source "
        f"{cfg.data.max_source_length} tokens, {dtype}, checkpointing "
        f"{'on' if cfg.train.gradient_checkpointing else 'off'}): estimated peak "
        f"{est['total_gb']:.2f} GiB on {device}" + (f" ({gpu_memory_gb:g} GiB card)" if gpu_memory_gb else "") + verdict
    )
    if budget is not None and est["total_gb"] >= budget * 0.9:
        for tip in est["advice"]:
            console.print(f"  try: {tip}")
    return est | {"budget_gb": budget, "dtype": dtype, "device": device}
