"""Train a LoRA adapter: validate everything, then one Seq2SeqTrainer run into a run directory.

`train()` reads as its steps: the run directory and config, the hardware setup (device,
precision, the model's config, quantization), the data, the model with LoRA, the trainer,
training, and saving the adapter. Every check that can fail runs before compute or any file
is written; each value is computed once and handed on.
"""

from __future__ import annotations

import errno
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers import set_seed

from loraqa.adapters.folder import save_model_folder
from loraqa.config import Config, dump_config, load_saved_config
from loraqa.config.templates import uses_context
from loraqa.data.features import build_features
from loraqa.data.splitting import DataReport, prepare_splits
from loraqa.distributed import is_main_process
from loraqa.domain_profile import DOMAIN_PROFILE_NAME, DomainProfile
from loraqa.errors import Interrupted, LoraqaError, option
from loraqa.modeling.files import load_tokenizer
from loraqa.modeling.loading import configure_base, load_base_model, load_seq2seq_config, quantization_config
from loraqa.modeling.lora import add_lora, parameter_counts
from loraqa.modeling.precision import resolve_device, resolve_dtype
from loraqa.output_files import jsonl_line, write_atomic, write_json
from loraqa.reporting import say
from loraqa.run_dir import (
    check_run_dir,
    default_run_name,
    environment,
    last_checkpoint,
    prepare_run_dir,
    remove_incomplete_checkpoints,
)
from loraqa.tracker_files import TRAIN_PREDICTIONS, log_training_artifacts
from loraqa.training import tracking
from loraqa.training.trainer import LoraqaTrainer, TrainerData, build_trainer

# long paths must not be wrapped mid-line; under torchrun only rank 0 reports


@dataclass
class TrainResult:
    run_dir: Path
    model: object  # the trained PeftModel, still in memory
    metrics: dict


@dataclass
class Setup:
    """Where and how the model runs, decided once from the config."""

    device: str
    dtype: str
    model_config: Any  # the base model's transformers config
    quantization: object | None  # bitsandbytes config for an 8/4-bit base, else None


@dataclass
class Data:
    train_rows: list[dict]
    test_rows: list[dict]
    report: DataReport


def _say(message: str) -> None:
    if is_main_process():  # under torchrun the first process speaks for all
        say(message)


def resolve_run_dir(cfg: Config, output: str | None) -> Path:
    return Path(output) if output else Path("runs") / default_run_name(cfg)


def saved_config(run_dir: Path) -> Config:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise LoraqaError(f"{run_dir} has no config.yaml to resume with; drop {option('resume')} to start a new run")
    return load_saved_config(path)


def train(cfg: Config, output: str | None = None, overwrite: bool = False, resume: bool = False) -> TrainResult:
    """Run one training job. Every input is checked before compute or any file is written.

    Under torchrun / accelerate every rank runs this; only rank 0 writes the run directory
    (the Trainer and its tracker callbacks already keep their own writes to rank 0).

    Args:
        cfg: The configuration (load_config).
        output: The run directory (default: runs/ and a name made from the model and preset).
        overwrite: Replace an earlier run there (only a loraqa run directory is deleted).
        resume: Continue from the run's last complete checkpoint, with its saved config.

    Returns:
        The run directory, the trained model and the final metrics.

    Raises:
        LoraqaError: Bad data, a model that cannot be loaded, a run directory in the way, a
            full disk (the last complete checkpoint is kept); Interrupted on Ctrl-C, after a
            checkpoint is saved.
    """
    main = is_main_process()
    run_dir = resolve_run_dir(cfg, output)
    if main:  # other ranks would race rank 0's own writes into the directory
        check_run_dir(run_dir, overwrite=overwrite, resume=resume)
    if resume:
        cfg = saved_config(run_dir)
        _say(f"resuming {run_dir} from {Path(last_checkpoint(run_dir) or '').name} with its saved config.yaml")
    tracking.check_tracker(cfg.track.report_to)
    setup = hardware_setup(cfg)
    data = load_data(cfg)
    tokenizer = load_tokenizer(cfg.model.name)
    model, params = build_model(cfg, setup)
    train_ds, eval_ds = build_datasets(cfg, tokenizer, data)
    # Everything is valid: only now does the run directory appear.
    if main:
        write_run_files(
            run_dir,
            cfg,
            data,
            overwrite,
            resume,
            environment(setup.device, setup.dtype)
            | {"parameters": params, "model_type": setup.model_config.model_type},
        )
    report_to = tracking.setup_tracking(cfg.track, run_dir, run_dir.name)
    trainer = build_trainer(
        cfg,
        model,
        tokenizer,
        TrainerData(train_ds, eval_ds, data.test_rows),
        run_dir,
        setup.dtype,
        setup.device,
        report_to,
    )
    say_micro_batches(cfg, trainer)
    metrics = run_trainer(trainer, run_dir, resume)
    if main:
        save_adapter(trainer, tokenizer, cfg, data, run_dir)
        save_eval_answers(trainer, run_dir)
        log_training_artifacts(cfg.track.report_to, run_dir)
    return TrainResult(run_dir=run_dir, model=trainer.model, metrics=metrics)


def hardware_setup(cfg: Config) -> Setup:
    """The cheap checks first: the model's config (an encoder-decoder?), precision, quantization."""
    device = resolve_device(cfg.model.device)
    model_config = load_seq2seq_config(cfg.model.name)
    dtype = resolve_dtype(cfg.model.dtype, device, model_config.model_type)
    bnb = (
        quantization_config(cfg.model.quantization, model_config.model_type)
        if cfg.model.quantization != "none"
        else None
    )
    return Setup(device, dtype, model_config, bnb)


def load_data(cfg: Config) -> Data:
    train_rows, test_rows, report = prepare_splits(cfg.data, needs_context=uses_context(cfg.data.template))
    _say(
        f"data: {report.rows_loaded} rows loaded, {report.rows_usable} usable, "
        f"{report.train_rows} train / {report.test_rows} test"
    )
    return Data(train_rows, test_rows, report)


def build_model(cfg: Config, setup: Setup):
    """The base model with LoRA, and its parameter counts."""
    # Seed before LoRA's random init: otherwise the adapter's starting point depends on whatever
    # used the RNG earlier in the process, and the same config gives different runs.
    set_seed(cfg.train.seed)
    model = load_base_model(
        cfg.model.name, setup.dtype, setup.device, cfg.model.allow_pickle, setup.model_config, setup.quantization
    )
    configure_base(model, cfg.model.dropout, cfg.model.attention, setup.device)
    model = add_lora(
        model,
        cfg.lora,
        cfg.train.gradient_checkpointing,
        quantized=setup.quantization is not None,
        fast_kernels=cfg.model.fast_kernels,
    )
    params = parameter_counts(model)
    _say(
        f"model: {cfg.model.name} on {setup.device} ({setup.dtype}); trainable parameters "
        f"{params['trainable']:,} of {params['total']:,} ({params['trainable_percent']}%)"
    )
    return model, params


def build_datasets(cfg: Config, tokenizer, data: Data):
    train_ds, train_counts = build_features(tokenizer, data.train_rows, cfg.data, train=True)
    eval_ds, eval_counts = build_features(tokenizer, data.test_rows, cfg.data, train=False)
    data.report.features = {"train": train_counts.as_dict(), "test": eval_counts.as_dict()}
    if train_ds is None:
        raise LoraqaError(
            f"no training example fits data.max_source_length={cfg.data.max_source_length}; "
            "raise it or shorten the prompt template"
        )
    return train_ds, eval_ds


def say_micro_batches(cfg: Config, trainer) -> None:
    micro, accumulate = trainer.args.per_device_train_batch_size, trainer.args.gradient_accumulation_steps
    if (micro, accumulate) != (cfg.train.batch_size, cfg.train.grad_accum):
        _say(
            f"fp32 on a CPU: each step's {micro * accumulate} examples as {accumulate} micro-batches of "
            f"{micro} (train.fp32_cpu_micro_batch; the same update, less memory)"
        )


def run_trainer(trainer: LoraqaTrainer, run_dir: Path, resume: bool) -> dict:
    checkpoint = last_checkpoint(run_dir) if resume else None
    try:
        metrics = trainer.train(resume_from_checkpoint=checkpoint).metrics
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            last = last_checkpoint(run_dir)
            raise LoraqaError(
                f"the disk filled up while writing to {run_dir}; the last complete checkpoint is "
                f"{Path(last).name if last else 'none'} (kept). Free some space, then resume with: "
                f"loraqa train --output {run_dir} --resume"
            ) from None
        raise
    if trainer.interrupt.requested:
        raise Interrupted(
            f"interrupted at step {trainer.state.global_step}; checkpoint saved in {run_dir}/checkpoints. "
            f"Resume with: loraqa train --output {run_dir} --resume"
        )
    return metrics


def write_run_files(run_dir: Path, cfg: Config, data: Data, overwrite: bool, resume: bool, env: dict) -> None:
    prepare_run_dir(run_dir, overwrite=overwrite, resume=resume)
    if resume:
        removed = remove_incomplete_checkpoints(run_dir)
        if removed:
            _say(f"removed incomplete checkpoint(s) {', '.join(removed)} (cut short by the crash)")
    else:
        write_atomic(run_dir / "config.yaml", dump_config(cfg))
    write_json(run_dir / "data_report.json", asdict(data.report))
    # Which questions were held out: `loraqa eval` scores these by default.
    write_json(
        run_dir / "split.json", {"train": [r["id"] for r in data.train_rows], "test": [r["id"] for r in data.test_rows]}
    )
    write_json(run_dir / "env.json", env)


def save_adapter(trainer, tokenizer, cfg: Config, data: Data, run_dir: Path) -> None:
    """The final adapter (the best-F1 checkpoint when evaluating), its config and domain profile."""
    profile = DomainProfile.from_rows(data.train_rows, source=cfg.data.source, run_name=run_dir.name)
    save_model_folder(
        trainer.model, tokenizer, run_dir / "adapter", cfg, extra_files={DOMAIN_PROFILE_NAME: profile.to_json()}
    )
    record_best(trainer, run_dir)
    _say(f"adapter saved to {run_dir / 'adapter'}")


def save_eval_answers(trainer, run_dir: Path) -> None:
    """The answers of the last evaluation during training, beside the run (and in its tracker)."""
    items = getattr(trainer.compute_metrics, "last_items", None)
    if items:
        write_atomic(
            run_dir / TRAIN_PREDICTIONS, "".join(jsonl_line({"step": trainer.state.global_step, **i}) for i in items)
        )


def record_best(trainer, run_dir: Path) -> None:
    best = trainer.state.best_model_checkpoint
    if not best:
        return
    _say(f"best F1 {trainer.state.best_metric:.2f} at {Path(best).name}: kept as the final adapter")
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write(
            json.dumps(
                {
                    "step": trainer.state.global_step,
                    "best_checkpoint": Path(best).name,
                    "best_f1": trainer.state.best_metric,
                }
            )
            + "\n"
        )
