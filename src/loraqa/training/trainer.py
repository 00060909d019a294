"""Wiring of the HF Seq2SeqTrainer: arguments, collator, metrics and callbacks from a loraqa Config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from transformers import (
    DataCollatorForSeq2Seq,
    EarlyStoppingCallback,
    PreTrainedModel,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
)
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

from loraqa.config import Config
from loraqa.training import tracking
from loraqa.training.callbacks import AnswerMetrics, GracefulInterrupt, ReturnFreedMemory, logits_to_ids


def micro_batches(t, dtype: str, device: str) -> tuple[int, int]:
    """(micro-batch, accumulation steps) for one optimizer step of batch_size x grad_accum examples.
    fp32 on a CPU may split it finer (train.fp32_cpu_micro_batch): fp32 activations are twice
    bf16's, and on a CPU the smaller GEMMs run as fast in fp32 (measured: 4 x 4 instead of 8 x 2
    trains at the same speed with 0.8 GiB less peak RSS; in bf16 it is 15-20% slower). A size
    that is not smaller than batch_size or does not divide the step leaves the batch as given."""
    micro, per_step = t.fp32_cpu_micro_batch, t.batch_size * t.grad_accum
    if device == "cpu" and dtype == "fp32" and micro and micro < t.batch_size and per_step % micro == 0:
        return micro, per_step // micro
    return t.batch_size, t.grad_accum


def training_arguments(cfg: Config, run_dir: Path, dtype: str, device: str, report_to: list[str], has_eval: bool):
    t = cfg.train
    evaluate = has_eval and t.eval_steps > 0
    micro, accumulate = micro_batches(t, dtype, device)
    return Seq2SeqTrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=micro,
        per_device_eval_batch_size=cfg.eval.batch_size,
        gradient_accumulation_steps=accumulate,
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


class LoraqaTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer with T5's gradient-accumulation loss scaled right, minus two per-micro-batch
    walks over the model's ~1,000 modules.

    Together they were 14% of a batch-1 (`seed` preset) step when profiled:
    `floating_point_ops` recounts the parameters for a FLOPs log entry, and `training_step` calls
    `model.train()` even when the model is already in training mode.
    """

    _params_per_token: int | None = None
    interrupt: GracefulInterrupt  # set by build_trainer: whether Ctrl-C stopped training

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # T5's forward takes **kwargs, so the Trainer concludes the model divides its loss by
        # the token count of all accumulated micro-batches and skips its own division by the
        # accumulation steps; T5 ignores that count and returns a per-micro-batch mean, so loss
        # and gradients came out grad_accum times too large. The Trainer divides instead.
        self.model_accepts_loss_kwargs = False

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:
            return EpochSeededLengthGroupedSampler(sampler.lengths, sampler.batch_size, self.args.seed)
        return sampler

    def floating_point_ops(self, inputs) -> int:
        if self._params_per_token is None:
            self._params_per_token = cast(PreTrainedModel, self.model).num_parameters(exclude_embeddings=True)
        ids = inputs.get(getattr(self.model, "main_input_name", "input_ids"))
        return 6 * ids.numel() * self._params_per_token if ids is not None else 0

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not (model.training and getattr(model, "module", model).training):
            return super().training_step(model, inputs, num_items_in_batch)
        real_train = model.train
        # the instance attribute shadows nn.Module.train for this call only
        model.train = lambda mode=True: model if mode else real_train(mode)
        try:
            return super().training_step(model, inputs, num_items_in_batch)
        finally:
            del model.train


class EpochSeededLengthGroupedSampler:
    """transformers' length grouping with the order drawn from (seed, epoch), not the global RNG.

    The library's LengthGroupedSampler draws each epoch's order from the global RNG when the epoch
    starts; a run resumed in epoch 2 or later draws it from a different RNG state than the
    uninterrupted run did, so it trains on a different order (measured: adapters 0.005 apart).
    Seeding by epoch makes the resumed order the uninterrupted one, on every rank alike.
    """

    def __init__(self, lengths, batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed, self.epoch = lengths, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:  # the Trainer calls this at the start of every epoch
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


@dataclass
class TrainerData:
    train: object  # the training features
    eval: object | None  # features the loss is evaluated on (None: no evaluation during training)
    test_rows: list[dict]  # questions whose generated answers are scored (EM/F1) at each evaluation


def build_trainer(cfg, model, tokenizer, data: TrainerData, run_dir, dtype, device, report_to) -> LoraqaTrainer:
    """The trainer; its `interrupt` callback says whether Ctrl-C stopped it (a checkpoint is saved first)."""
    train_ds, eval_ds, test_rows = data.train, data.eval, data.test_rows
    interrupt = GracefulInterrupt()
    args = training_arguments(cfg, run_dir, dtype, device, report_to, has_eval=eval_ds is not None)
    collator = DataCollatorForSeq2Seq(
        tokenizer,
        model=model,
        label_pad_token_id=-100,
        padding=True,
        pad_to_multiple_of=8 if device == "cuda" else None,
    )
    evaluating = args.eval_strategy != "no"
    subset = test_rows if cfg.eval.subset is None else test_rows[: cfg.eval.subset]
    answer_metrics = AnswerMetrics(subset, cfg, tokenizer, autocast_bf16=dtype == "bf16")
    callbacks = [tracking.MetricsFileCallback(run_dir / "metrics.jsonl"), interrupt]
    if device == "cpu":
        callbacks.append(ReturnFreedMemory())
    if evaluating and cfg.train.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping_patience))
    trainer = LoraqaTrainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=train_ds,
        eval_dataset=eval_ds if evaluating else None,
        processing_class=tokenizer,
        callbacks=callbacks,
        compute_metrics=answer_metrics if evaluating else None,
        preprocess_logits_for_metrics=logits_to_ids if evaluating else None,
    )
    answer_metrics.model = trainer.model
    trainer.interrupt = interrupt
    trainer.add_callback(tracking.ConfigLogCallback(cfg.to_dict(), cfg.track.report_to, trainer, run_dir))
    return trainer
