"""Wiring of the HF Seq2SeqTrainer: arguments, collator, metrics and callbacks from a loraqa Config."""

from __future__ import annotations

from pathlib import Path

from loraqa.config import Config


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
        # LoRA uses every trainable parameter in every step: skip DDP's unused-parameter search
        ddp_find_unused_parameters=False,
        # gradient checkpointing is enabled on the model in modeling.add_lora (non-reentrant + input grads)
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=False,
        log_level="warning",
    )


def build_trainer(cfg, model, tokenizer, train_ds, eval_ds, test_rows, run_dir, dtype, device, report_to, interrupt):
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
    callbacks = [tracking.MetricsFileCallback(run_dir / "metrics.jsonl"), interrupt]
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


