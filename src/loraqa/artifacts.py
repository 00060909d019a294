"""What loraqa writes to disk: the run directory, files written atomically, the adapter folder.

runs/<name>/ config.yaml  adapter/  checkpoints/  metrics.jsonl  data_report.json  split.json  env.json
An adapter folder holds PEFT's files, the tokenizer and loraqa_config.yaml (the resolved config
it was trained with: which prompt template it expects). A merged or exported model folder holds
the same config file beside its weights.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from loraqa import __version__
from loraqa.config import Config, dump_config, load_saved_config
from loraqa.errors import LoraqaError, NotAnAdapter, option

ADAPTER_CONFIG_NAME = "loraqa_config.yaml"
# the no-answer threshold `loraqa eval` calibrated on held-out questions, read by later use
CALIBRATION_NAME = "loraqa_calibration.json"
CTRANSLATE2_MARKER = "model.bin"  # CTranslate2's weights file: a folder written by `loraqa export`


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


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary name then rename: a crash never leaves a half-written file in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def jsonl_line(row: dict) -> str:
    """One JSON-lines row. U+2028 and U+2029 are escaped: valid unescaped in JSON, but many readers
    (Python's str.splitlines among them) take them for line ends and would cut the row in two."""
    return json.dumps(row, ensure_ascii=False).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n"


def write_json(path: Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def replace_dir(tmp: Path, final: Path) -> None:
    """Swap a fully written directory into place (the old one is removed only after)."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def environment(device: str, dtype: str) -> dict:
    import torch

    versions = {}
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


# ---------------------------------------------------------------- the adapter folder


@dataclass
class AdapterRef:
    adapter_dir: Path
    run_dir: Path | None
    config: Config  # the config the adapter was trained with
    calibration: dict | None = None  # written by `loraqa eval`
    kind: str = "lora"  # "lora": a PEFT adapter folder; "ctranslate2": a merged model exported by `loraqa export`

    def __post_init__(self):
        if self.calibration is None:
            self.calibration = read_calibration(self.adapter_dir)

    @property
    def no_answer_threshold(self) -> float | None:
        return (self.calibration or {}).get("no_answer_threshold")


def read_calibration(adapter_dir: Path) -> dict | None:
    """The calibration `loraqa eval` saved, checked: its threshold is a finite number or null."""
    path = Path(adapter_dir) / CALIBRATION_NAME
    if not path.exists():
        return None
    damaged = LoraqaError(f"{path} is damaged; delete it and run `loraqa eval` again to recalibrate")
    if not path.is_file():  # a FIFO or device would block or never end
        raise damaged
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise damaged from None
    threshold = data.get("no_answer_threshold") if isinstance(data, dict) else "missing"
    if threshold is not None and not (
        isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and math.isfinite(threshold)
    ):
        raise damaged
    return data


def write_calibration(adapter_dir: Path, calibration: dict) -> None:
    write_json(Path(adapter_dir) / CALIBRATION_NAME, calibration)


def resolve_adapter(path: str | Path) -> AdapterRef:
    """A run directory or an adapter directory, with the config the adapter was trained with."""
    p = Path(path)
    if (p / "adapter" / "adapter_config.json").is_file() and (p / "config.yaml").is_file():
        return AdapterRef(p / "adapter", p, load_saved_config(p / "config.yaml"))
    if (p / "adapter_config.json").is_file():
        for cfg_path in (p / ADAPTER_CONFIG_NAME, p.parent / "config.yaml"):
            if cfg_path.is_file():
                run_dir = p.parent if cfg_path.name == "config.yaml" else None
                return AdapterRef(p, run_dir, load_saved_config(cfg_path))
        raise LoraqaError(
            f"{p} has no {ADAPTER_CONFIG_NAME}: loraqa cannot tell which prompt template it was "
            "trained with; use an adapter written by `loraqa train`"
        )
    if (p / CTRANSLATE2_MARKER).is_file() and (p / ADAPTER_CONFIG_NAME).is_file():
        # an export keeps its run's held-out split, so `loraqa eval EXPORT` scores the same questions
        run_dir = p if (p / "split.json").is_file() else None
        return AdapterRef(p, run_dir, load_saved_config(p / ADAPTER_CONFIG_NAME), kind="ctranslate2")
    if not p.exists():
        raise NotAnAdapter(f"{p} does not exist; pass a run directory (runs/NAME) or its adapter/ folder")
    raise NotAnAdapter(
        f"{p} holds no adapter (adapter_config.json); pass a run directory whose training finished, "
        "or an adapter folder"
    )


def adapter_files(ref: AdapterRef) -> list[Path]:
    """Every file loading this adapter may open: the adapter folder's own files and, for a run
    directory, its config.yaml and split.json."""
    files = sorted(ref.adapter_dir.iterdir())
    if ref.run_dir is not None and ref.run_dir != ref.adapter_dir:
        files += [ref.run_dir / name for name in ("config.yaml", "split.json") if (ref.run_dir / name).exists()]
    return files


def check_regular_files(ref: AdapterRef, max_bytes: int | None = None) -> None:
    """Refuse an adapter folder holding anything but regular files and folders: a FIFO named like a
    weights file blocks whoever opens it (the engine, with every request waiting behind it), a
    device file reads forever. Symlinks count as what they point to. Optionally a size limit."""
    total = 0
    for path in adapter_files(ref):
        try:
            mode = path.stat().st_mode
        except OSError:
            raise LoraqaError(f"{path} cannot be read (a broken link?)") from None
        if stat.S_ISDIR(mode):
            continue
        if not stat.S_ISREG(mode):
            raise LoraqaError(
                f"{path} is not a regular file; an adapter folder holds only files written by "
                "`loraqa train` or `loraqa export`"
            )
        total += path.stat().st_size
    if max_bytes is not None and total > max_bytes:
        raise LoraqaError(
            f"the adapter in {ref.adapter_dir} has {total / 2**20:.0f} MiB of files, over the limit of "
            f"{max_bytes / 2**20:.0f} MiB"
        )


def save_model_folder(model, tokenizer, target: Path, cfg: Config, extra_files: dict[str, str] | None = None) -> None:
    """A model's (or adapter's) files, its tokenizer, the loraqa config (which prompt template it
    expects) and any extra text files, written aside and swapped in whole: a crash never leaves a
    half-written folder that loads."""
    tmp = target.with_name(f".{target.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    (tmp / ADAPTER_CONFIG_NAME).write_text(dump_config(cfg))
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text)
    target.parent.mkdir(parents=True, exist_ok=True)
    replace_dir(tmp, target)
