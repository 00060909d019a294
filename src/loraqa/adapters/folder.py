"""The adapter folder: find one (a run directory, its adapter/ folder or a CTranslate2 export),
check its files, and write one.

An adapter folder holds PEFT's files, the tokenizer and loraqa_config.yaml (the resolved config
it was trained with: which prompt template it expects). A merged or exported model folder holds
the same config file beside its weights.
"""

from __future__ import annotations

import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from loraqa.adapters.calibration import read_calibration
from loraqa.config import Config, dump_config, load_saved_config
from loraqa.errors import LoraqaError, NotAnAdapter
from loraqa.modeling.files import without_progress_bars
from loraqa.output_files import replace_dir

ADAPTER_CONFIG_NAME = "loraqa_config.yaml"
CTRANSLATE2_MARKER = "model.bin"  # CTranslate2's weights file: a folder written by `loraqa export`


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
    with without_progress_bars():
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    (tmp / ADAPTER_CONFIG_NAME).write_text(dump_config(cfg))
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text)
    target.parent.mkdir(parents=True, exist_ok=True)
    replace_dir(tmp, target)
