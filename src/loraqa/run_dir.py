"""The run directory `loraqa train` writes, and the checks before anything is written to it.

runs/<name>/ config.yaml  adapter/  checkpoints/  metrics.jsonl  data_report.json  split.json  env.json
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
from pathlib import Path

from loraqa import __version__
from loraqa.errors import LoraqaError, option


def default_run_name(cfg) -> str:
    if cfg.track.run_name:
        return cfg.track.run_name
    model = Path(cfg.model.name.rstrip("/")).name or "model"
    name = f"{model}-lora-{cfg.preset or 'custom'}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


# what `loraqa train` writes into a run directory: config.yaml beside at least one of the others
RUN_FILES = ("adapter", "checkpoints", "metrics.jsonl", "split.json", "data_report.json", "env.json")


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and any((path / name).exists() for name in RUN_FILES)


def check_run_dir(run_dir: Path, overwrite: bool, resume: bool) -> None:
    """Refuse to clobber an earlier run, or anything that is not one; called before any compute."""
    if run_dir.exists() and not run_dir.is_dir():
        raise LoraqaError(f"{run_dir} exists and is not a directory; choose another {option('output')}")
    not_empty = run_dir.is_dir() and any(run_dir.iterdir())
    if resume:
        if not last_checkpoint(run_dir):
            raise LoraqaError(
                f"nothing to resume in {run_dir}: it has no checkpoints/checkpoint-*; "
                f"drop {option('resume')} to start a new run"
            )
        return
    if not_empty and not overwrite:
        raise LoraqaError(
            f"run directory {run_dir} already exists and is not empty; pass {option('overwrite')} to "
            f"replace it, {option('resume')} to continue it, or {option('output')} for a new one"
        )
    if not_empty:
        check_replaceable(run_dir)


def check_replaceable(run_dir: Path) -> None:
    """Replacing a run deletes its directory: only a directory holding a loraqa run, and never one
    the working directory or the home directory sits in."""
    target = run_dir.resolve()
    for keep, what in ((Path.cwd().resolve(), "the working directory"), (Path.home().resolve(), "your home directory")):
        if keep == target or keep.is_relative_to(target):
            raise LoraqaError(
                f"{run_dir} is (or holds) {what}; {option('overwrite')} would delete it. Choose another "
                f"{option('output')}"
            )
    if not is_run_dir(run_dir):
        raise LoraqaError(
            f"{run_dir} is not a loraqa run directory (no config.yaml beside adapter/, checkpoints/ or "
            f"metrics.jsonl), so {option('overwrite')} will not delete it; choose another "
            f"{option('output')} or empty it yourself"
        )


def checkpoint_is_complete(path: Path) -> bool:
    """The Trainer writes trainer_state.json last: a checkpoint without a readable one was cut
    short (killed or disk full) and cannot be resumed from."""
    try:
        json.loads((path / "trainer_state.json").read_text())
        return True
    except (OSError, ValueError):
        return False


def checkpoints(run_dir: Path) -> list[Path]:
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def last_checkpoint(run_dir: Path) -> str | None:
    complete = [p for p in checkpoints(run_dir) if checkpoint_is_complete(p)]
    return str(complete[-1]) if complete else None


def remove_incomplete_checkpoints(run_dir: Path) -> list[str]:
    """Drop checkpoints newer than the last complete one (they were cut short)."""
    last = last_checkpoint(run_dir)
    last_step = int(Path(last).name.split("-")[1]) if last else -1
    removed = []
    for p in checkpoints(run_dir):
        if int(p.name.split("-")[1]) > last_step and not checkpoint_is_complete(p):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


def prepare_run_dir(run_dir: Path, overwrite: bool, resume: bool) -> None:
    if overwrite and not resume and run_dir.is_dir() and any(run_dir.iterdir()):
        check_replaceable(run_dir)  # checked again at the moment of deleting
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def environment(device: str, dtype: str) -> dict:
    import torch

    versions: dict[str, str | None] = {}
    for pkg in ("torch", "transformers", "peft", "datasets", "accelerate", "wandb"):
        try:
            from importlib.metadata import version

            versions[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - optional package missing
            versions[pkg] = None
    env = {
        "loraqa": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "device": device,
        "dtype": dtype,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.version.cuda,
    }
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 2)
    return env
