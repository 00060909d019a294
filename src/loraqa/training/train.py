"""Train a LoRA adapter: validate everything, then one Seq2SeqTrainer run into a run directory."""

from __future__ import annotations

import errno
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from transformers import set_seed

from loraqa.artifacts import (check_run_dir, default_run_name, environment, is_main_process, last_checkpoint,
                              prepare_run_dir, remove_incomplete_checkpoints, save_model_folder, write_atomic,
                              write_json)
from loraqa.config import Config, dump_config, load_saved_config
from loraqa.config.templates import uses_context
from loraqa.data.features import build_features
from loraqa.data.splitting import prepare_splits
from loraqa.errors import Interrupted, LoraqaError
from loraqa.inference.routing import DOMAIN_PROFILE_NAME, DomainProfile
from loraqa.modeling.loading import (configure_base, load_base_model, load_seq2seq_config, load_tokenizer,
                                     quantization_config)
from loraqa.modeling.lora import add_lora, parameter_counts
from loraqa.modeling.precision import resolve_device, resolve_dtype
from loraqa.training import tracking
from loraqa.training.callbacks import GracefulInterrupt
from loraqa.training.trainer import build_trainer, micro_batches

# long paths must not be wrapped mid-line; under torchrun only rank 0 reports
console = Console(stderr=True, soft_wrap=True, quiet=not is_main_process())


def resolve_run_dir(cfg: Config, output: str | None) -> Path:
    return Path(output) if output else Path("runs") / default_run_name(cfg)


def saved_config(run_dir: Path) -> Config:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise LoraqaError(f"{run_dir} has no config.yaml to resume with; drop --resume to start a new run")
    return load_saved_config(path)


@dataclass
class TrainResult:
    run_dir: Path
    model: object  # the trained PeftModel, still in memory
    metrics: dict


def train(cfg: Config, output: str | None = None, overwrite: bool = False, resume: bool = False) -> TrainResult:
    """Run one training job. Every input is checked before compute or any file is written.

    Under torchrun / accelerate every rank runs this; only rank 0 writes the run directory
    (the Trainer and its tracker callbacks already keep their own writes to rank 0)."""
    main = is_main_process()
    run_dir = resolve_run_dir(cfg, output)
    if main:  # other ranks would race rank 0's own writes into the directory
        check_run_dir(run_dir, overwrite=overwrite, resume=resume)
    if resume:
        cfg = saved_config(run_dir)
        console.print(f"resuming {run_dir} from {Path(last_checkpoint(run_dir)).name} with its saved config.yaml")
    tracking.check_tracker(cfg.track.report_to)

    # Cheap checks first (model config, precision, quantization), then the data, then weights.
    device = resolve_device(cfg.model.device)
    model_config = load_seq2seq_config(cfg.model.name)
    dtype = resolve_dtype(cfg.model.dtype, device, model_config.model_type)
    if cfg.model.quantization != "none":
        quantization_config(cfg.model.quantization, model_config.model_type)

    train_rows, test_rows, report = prepare_splits(cfg.data, needs_context=uses_context(cfg.data.template))
    console.print(f"data: {report.rows_loaded} rows loaded, {report.rows_usable} usable, "
                  f"{report.train_rows} train / {report.test_rows} test")

    tokenizer = load_tokenizer(cfg.model.name)
    # Seed before LoRA's random init: otherwise the adapter's starting point depends on whatever
    # used the RNG earlier in the process, and the same config gives different runs.
    set_seed(cfg.train.seed)
    model = load_base_model(cfg.model.name, dtype, device, cfg.model.quantization, cfg.model.allow_pickle)
    configure_base(model, cfg.model.dropout, cfg.model.attention, device)
    model = add_lora(model, cfg.lora, cfg.train.gradient_checkpointing,
                     quantized=cfg.model.quantization != "none", fast_kernels=cfg.model.fast_kernels)
    params = parameter_counts(model)
    console.print(f"model: {cfg.model.name} on {device} ({dtype}); trainable parameters "
                  f"{params['trainable']:,} of {params['total']:,} ({params['trainable_percent']}%)")
    micro, accumulate = micro_batches(cfg.train, dtype, device)
    if (micro, accumulate) != (cfg.train.batch_size, cfg.train.grad_accum):
        console.print(f"fp32 on a CPU: each step's {micro * accumulate} examples as {accumulate} micro-batches of "
                      f"{micro} (train.fp32_cpu_micro_batch; the same update, less memory)")

    train_ds, train_counts = build_features(tokenizer, train_rows, cfg.data, train=True)
    eval_ds, eval_counts = build_features(tokenizer, test_rows, cfg.data, train=False)
    report.features = {"train": train_counts.as_dict(), "test": eval_counts.as_dict()}
    if train_ds is None:
        raise LoraqaError(f"no training example fits data.max_source_length={cfg.data.max_source_length}; "
                          "raise it or shorten the prompt template")

    # Everything is valid: only now does the run directory appear.
    if main:
        write_run_files(run_dir, cfg, report, train_rows, test_rows, overwrite, resume,
                        environment(device, dtype) | {"parameters": params, "model_type": model_config.model_type})
    report_to = tracking.setup_tracking(cfg.track, run_dir, run_dir.name)
    interrupt = GracefulInterrupt()
    trainer = build_trainer(cfg, model, tokenizer, train_ds, eval_ds, test_rows, run_dir, dtype, device, report_to,
                            interrupt)
    checkpoint = last_checkpoint(run_dir) if resume else None
    try:
        output_metrics = trainer.train(resume_from_checkpoint=checkpoint).metrics
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            last = last_checkpoint(run_dir)
            raise LoraqaError(f"the disk filled up while writing to {run_dir}; the last complete checkpoint is "
                              f"{Path(last).name if last else 'none'} (kept). Free some space, then resume with: "
                              f"loraqa train --output {run_dir} --resume") from None
        raise
    if interrupt.requested:
        raise Interrupted(f"interrupted at step {trainer.state.global_step}; checkpoint saved in {run_dir}/checkpoints. "
                          f"Resume with: loraqa train --output {run_dir} --resume")
    if main:
        profile = DomainProfile.from_rows(train_rows, source=cfg.data.source, run_name=run_dir.name)
        save_model_folder(trainer.model, tokenizer, run_dir / "adapter", cfg,
                          extra_files={DOMAIN_PROFILE_NAME: profile.to_json()})
        record_best(trainer, run_dir)
        console.print(f"adapter saved to {run_dir / 'adapter'}")
    return TrainResult(run_dir=run_dir, model=trainer.model, metrics=output_metrics)


def write_run_files(run_dir, cfg, report, train_rows, test_rows, overwrite, resume, env) -> None:
    prepare_run_dir(run_dir, overwrite=overwrite, resume=resume)
    if resume:
        removed = remove_incomplete_checkpoints(run_dir)
        if removed:
            console.print(f"removed incomplete checkpoint(s) {', '.join(removed)} (cut short by the crash)")
    else:
        write_atomic(run_dir / "config.yaml", dump_config(cfg))
    write_json(run_dir / "data_report.json", asdict(report))
    # Which questions were held out: `loraqa eval` scores these by default.
    write_json(run_dir / "split.json", {"train": [r["id"] for r in train_rows], "test": [r["id"] for r in test_rows]})
    write_json(run_dir / "env.json", env)


def record_best(trainer, run_dir: Path) -> None:
    best = trainer.state.best_model_checkpoint
    if not best:
        return
    console.print(f"best F1 {trainer.state.best_metric:.2f} at {Path(best).name}: kept as the final adapter")
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"step": trainer.state.global_step, "best_checkpoint": Path(best).name,
                             "best_f1": trainer.state.best_metric}) + "\n")
