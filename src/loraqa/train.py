"""Train a LoRA adapter: validate everything, then one Seq2SeqTrainer run into a run directory."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console

from loraqa.config import Config, config_from_dict, dump_config
from loraqa.errors import LoraqaError
from loraqa.prompts import uses_context
from loraqa.rundir import (check_run_dir, default_run_name, environment, last_checkpoint, prepare_run_dir,
                           replace_dir, write_atomic, write_json)

log = logging.getLogger("loraqa")
console = Console(stderr=True, soft_wrap=True)  # long paths must not be wrapped mid-line


def resolve_run_dir(cfg: Config, output: str | None) -> Path:
    return Path(output) if output else Path("runs") / default_run_name(cfg)


def load_saved_config(path: Path) -> Config:
    import yaml

    try:
        return config_from_dict(yaml.safe_load(Path(path).read_text()) or {})
    except (yaml.YAMLError, OSError) as exc:
        raise LoraqaError(f"cannot read the saved config {path} ({type(exc).__name__}); it was damaged") from None


def saved_config(run_dir: Path) -> Config:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise LoraqaError(f"{run_dir} has no config.yaml to resume with; drop --resume to start a new run")
    return load_saved_config(path)


def training_arguments(cfg: Config, run_dir: Path, dtype: str, device: str, report_to: list[str], has_eval: bool):
    from transformers import Seq2SeqTrainingArguments

    t = cfg.train
    evaluate = has_eval and t.eval_steps > 0
    return Seq2SeqTrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=cfg.eval.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a share of the total steps
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        lr_scheduler_type=t.lr_scheduler,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=t.eval_steps if evaluate else None,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        # the final adapter is the checkpoint with the best F1 of generated answers
        load_best_model_at_end=evaluate,
        metric_for_best_model="f1" if evaluate else None,
        greater_is_better=True if evaluate else None,
        eval_accumulation_steps=1,
        logging_steps=t.logging_steps,
        bf16=dtype == "bf16",
        fp16=dtype == "fp16",
        use_cpu=device == "cpu",
        report_to=report_to,
        run_name=cfg.track.run_name or run_dir.name,
        seed=t.seed,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        dataloader_num_workers=t.num_workers,
        # gradient checkpointing is enabled on the model in modeling.add_lora (non-reentrant + input grads)
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=False,
        log_level="warning",
    )


@dataclass
class TrainResult:
    run_dir: Path
    model: object  # the trained PeftModel, still in memory
    metrics: dict


def train(cfg: Config, output: str | None = None, overwrite: bool = False, resume: bool = False) -> TrainResult:
    """Run one training job. Every input is checked before compute or any file is written."""
    from loraqa import data as data_mod
    from loraqa import features, modeling, tracking

    run_dir = resolve_run_dir(cfg, output)
    check_run_dir(run_dir, overwrite=overwrite, resume=resume)
    if resume:
        cfg = saved_config(run_dir)
        console.print(f"resuming {run_dir} from {last_checkpoint(run_dir)} with its saved config.yaml")
    tracking.check_tracker(cfg.track.report_to)

    # Cheap checks first (model config, precision, quantization), then the data, then weights.
    device = modeling.resolve_device(cfg.model.device)
    model_config = modeling.load_seq2seq_config(cfg.model.name)
    dtype = modeling.resolve_dtype(cfg.model.dtype, device, model_config.model_type)
    if cfg.model.quantization != "none":
        modeling.quantization_config(cfg.model.quantization, model_config.model_type)

    train_rows, test_rows, report = data_mod.prepare_splits(cfg.data, needs_context=uses_context(cfg.data.template))
    console.print(f"data: {report.rows_loaded} rows loaded, {report.rows_usable} usable, "
                  f"{report.train_rows} train / {report.test_rows} test")

    tokenizer = modeling.load_tokenizer(cfg.model.name)
    model = modeling.load_base_model(cfg.model.name, dtype, device, cfg.model.quantization)
    model = modeling.add_lora(model, cfg.lora, cfg.train.gradient_checkpointing,
                              quantized=cfg.model.quantization != "none")
    params = modeling.parameter_counts(model)
    console.print(f"model: {cfg.model.name} on {device} ({dtype}); trainable parameters "
                  f"{params['trainable']:,} of {params['total']:,} ({params['trainable_percent']}%)")

    train_ds, train_counts = features.build_features(tokenizer, train_rows, cfg.data, train=True)
    eval_ds, eval_counts = features.build_features(tokenizer, test_rows, cfg.data, train=False)
    report.features = {"train": train_counts.as_dict(), "test": eval_counts.as_dict()}
    if train_ds is None:
        raise LoraqaError(f"no training example fits data.max_source_length={cfg.data.max_source_length}; "
                          "raise it or shorten the prompt template")

    # Everything is valid: only now does the run directory appear.
    prepare_run_dir(run_dir, overwrite=overwrite, resume=resume)
    if not resume:
        write_atomic(run_dir / "config.yaml", dump_config(cfg))
    write_json(run_dir / "data_report.json", asdict(report))
    # Which questions were held out: `loraqa eval` scores these by default.
    write_json(run_dir / "split.json", {"train": [r["id"] for r in train_rows], "test": [r["id"] for r in test_rows]})
    env = environment(device, dtype) | {"parameters": params, "model_type": model_config.model_type}
    write_json(run_dir / "env.json", env)

    report_to = tracking.setup_tracking(cfg.track, run_dir, run_dir.name)
    trainer = build_trainer(cfg, model, tokenizer, train_ds, eval_ds, test_rows, run_dir, dtype, device, report_to)
    checkpoint = last_checkpoint(run_dir) if resume else None
    output_metrics = trainer.train(resume_from_checkpoint=checkpoint).metrics
    save_adapter(trainer.model, tokenizer, run_dir / "adapter", cfg)
    best = trainer.state.best_model_checkpoint
    if best:
        console.print(f"best F1 {trainer.state.best_metric:.2f} at {Path(best).name}: kept as the final adapter")
        with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": trainer.state.global_step, "best_checkpoint": Path(best).name,
                                 "best_f1": trainer.state.best_metric}) + "\n")
    console.print(f"adapter saved to {run_dir / 'adapter'}")
    return TrainResult(run_dir=run_dir, model=trainer.model, metrics=output_metrics)


def build_trainer(cfg, model, tokenizer, train_ds, eval_ds, test_rows, run_dir, dtype, device, report_to):
    from transformers import DataCollatorForSeq2Seq, EarlyStoppingCallback, Seq2SeqTrainer

    from loraqa import tracking
    from loraqa.evaluate import AnswerMetrics, logits_to_ids

    args = training_arguments(cfg, run_dir, dtype, device, report_to, has_eval=eval_ds is not None)
    collator = DataCollatorForSeq2Seq(
        tokenizer, model=model, label_pad_token_id=-100, padding=True,
        pad_to_multiple_of=8 if device == "cuda" else None,
    )
    evaluating = args.eval_strategy != "no"
    subset = test_rows if cfg.eval.subset is None else test_rows[: cfg.eval.subset]
    answer_metrics = AnswerMetrics(subset, cfg, tokenizer, autocast_bf16=dtype == "bf16")
    callbacks = [tracking.MetricsFileCallback(run_dir / "metrics.jsonl")]
    if evaluating and cfg.train.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping_patience))
    trainer = Seq2SeqTrainer(
        model=model, args=args, data_collator=collator, train_dataset=train_ds,
        eval_dataset=eval_ds if evaluating else None, processing_class=tokenizer, callbacks=callbacks,
        compute_metrics=answer_metrics if evaluating else None,
        preprocess_logits_for_metrics=logits_to_ids if evaluating else None,
    )
    answer_metrics.model = trainer.model
    trainer.add_callback(tracking.ConfigLogCallback(cfg.to_dict(), cfg.track.report_to, trainer))
    return trainer


def save_adapter(model, tokenizer, target: Path, cfg: Config) -> None:
    """PEFT files, the tokenizer and the loraqa config (which prompt template the adapter
    expects), written aside and swapped in whole."""
    tmp = target.with_name(f".{target.name}.tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    from loraqa.evaluate import ADAPTER_CONFIG_NAME

    (tmp / ADAPTER_CONFIG_NAME).write_text(dump_config(cfg))
    replace_dir(tmp, target)
