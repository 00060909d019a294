"""Range and consistency checks of a typed Config; each message says what to change."""

from __future__ import annotations

import dataclasses
import difflib

from loraqa.config.schema import SECTIONS, Config
from loraqa.config.templates import template_problem, uses_context
from loraqa.errors import option, setting


def suggest(name: str, options: list[str]) -> str:
    hint = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f" (did you mean '{hint[0]}'?)" if hint else ""


def validate(cfg: Config) -> list[str]:
    """Range and consistency checks; each message says what to change."""
    p = []
    for sname, cls in SECTIONS.items():
        sec = getattr(cfg, sname)
        for f in dataclasses.fields(cls):
            choices = f.metadata.get("choices")
            value = getattr(sec, f.name)
            if choices and value not in choices:
                p.append(
                    f"{sname}.{f.name} must be one of {', '.join(choices)}{suggest(str(value), list(choices))}, got {value!r}"
                )
    for f in dataclasses.fields(cfg.documents):
        if not getattr(cfg.documents, f.name) > 0:
            p.append(f"documents.{f.name} must be > 0, got {getattr(cfg.documents, f.name)}")
    if cfg.model.dropout is not None and not 0 <= cfg.model.dropout < 1:
        p.append(f"model.dropout must be in [0, 1) or null, got {cfg.model.dropout}")
    if cfg.lora.r < 1:
        p.append(f"lora.r must be >= 1, got {cfg.lora.r}")
    if cfg.lora.alpha <= 0:
        p.append(f"lora.alpha must be > 0, got {cfg.lora.alpha}")
    if not 0 <= cfg.lora.dropout < 1:
        p.append(f"lora.dropout must be in [0, 1), got {cfg.lora.dropout}")
    if not cfg.lora.target_modules:
        p.append("lora.target_modules must name at least one layer, e.g. [q, v]")
    if cfg.data.num_samples is not None and cfg.data.num_samples < 2:
        p.append(f"data.num_samples must be >= 2 (or null for all rows), got {cfg.data.num_samples}")
    if not 0 < cfg.data.test_size < 1:
        p.append(f"data.test_size must be between 0 and 1 (a share of the rows), got {cfg.data.test_size}")
    if cfg.data.max_source_length < 8:
        p.append(f"data.max_source_length must be >= 8 tokens, got {cfg.data.max_source_length}")
    # A negative overlap would skip text between windows; more than half the window would read
    # most of the passage twice (and a window whose question is long shrinks it further).
    if cfg.data.doc_stride is not None and not 0 <= cfg.data.doc_stride <= cfg.data.max_source_length // 2:
        p.append(
            f"data.doc_stride (the overlap between windows, in tokens) must be between 0 and half of "
            f"data.max_source_length ({cfg.data.max_source_length // 2}), got {cfg.data.doc_stride}; "
            f"e.g. {setting(f'data.doc_stride={cfg.data.max_source_length // 4}')}"
        )
    if cfg.data.negative_windows < 0:
        p.append(f"data.negative_windows must be >= 0, got {cfg.data.negative_windows}")
    if cfg.data.max_target_length < 1:
        p.append(f"data.max_target_length must be >= 1, got {cfg.data.max_target_length}")
    if not cfg.data.source:
        p.append(f"data.source is empty; give a dataset name or pass {option('data')}")
    err = template_problem(cfg.data.template)
    if err:
        p.append(err)
    elif cfg.data.task == "question_generation" and not uses_context(cfg.data.template):
        p.append(
            "data.task=question_generation writes questions about a passage, but data.template has no "
            "{context}; use the question_generation template"
        )
    t = cfg.train
    for key in ("batch_size", "grad_accum", "logging_steps", "save_steps"):
        if getattr(t, key) < 1:
            p.append(f"train.{key} must be >= 1, got {getattr(t, key)}")
    if t.fp32_cpu_micro_batch is not None and t.fp32_cpu_micro_batch < 1:
        p.append(f"train.fp32_cpu_micro_batch must be >= 1 or null, got {t.fp32_cpu_micro_batch}")
    if t.eval_steps < 0:
        p.append(f"train.eval_steps must be >= 0 (0 turns evaluation during training off), got {t.eval_steps}")
    if t.learning_rate <= 0 or t.learning_rate > 1:
        p.append(f"train.learning_rate must be in (0, 1], got {t.learning_rate}")
    if t.max_steps <= 0 and t.max_steps != -1:
        p.append(f"train.max_steps must be a positive number of steps or -1, got {t.max_steps}")
    if t.max_steps == -1 and t.epochs <= 0:
        p.append(f"train.epochs must be > 0 when train.max_steps is -1, got {t.epochs}")
    if t.eval_steps > 0 and t.save_steps % t.eval_steps:
        p.append(
            f"train.save_steps ({t.save_steps}) must be a multiple of train.eval_steps ({t.eval_steps}) so the "
            f"best-F1 checkpoint is saved; e.g. {setting(f'train.save_steps={t.eval_steps}')}"
        )
    if t.early_stopping_patience < 0 or (t.early_stopping_patience and t.eval_steps == 0):
        p.append("train.early_stopping_patience needs train.eval_steps > 0 (and must be >= 0)")
    if cfg.retrieval.top_k < 1:
        p.append(f"retrieval.top_k must be >= 1, got {cfg.retrieval.top_k}")
    if not cfg.retrieval.passage_weight >= 0:  # also refuses NaN
        p.append(f"retrieval.passage_weight must be >= 0, got {cfg.retrieval.passage_weight}")
    if cfg.eval.subset is not None and cfg.eval.subset < 1:
        p.append(f"eval.subset must be >= 1 or null (all held-out questions), got {cfg.eval.subset}")
    if not 0 <= t.warmup_ratio < 1:
        p.append(f"train.warmup_ratio must be in [0, 1), got {t.warmup_ratio}")
    schedulers = [] if t.lr_scheduler in COMMON_SCHEDULERS else _scheduler_names()
    if schedulers and t.lr_scheduler not in schedulers:
        p.append(
            f"train.lr_scheduler '{t.lr_scheduler}' is not a transformers scheduler"
            f"{suggest(t.lr_scheduler, schedulers)}; choose from {', '.join(schedulers)}"
        )
    if cfg.eval.max_new_tokens < 1:
        p.append(f"eval.max_new_tokens must be >= 1, got {cfg.eval.max_new_tokens}")
    if cfg.eval.batch_size < 1:
        p.append(f"eval.batch_size must be >= 1, got {cfg.eval.batch_size}")
    if cfg.eval.num_beams < 1:
        p.append(f"eval.num_beams must be >= 1, got {cfg.eval.num_beams}")
    return p


# Every config read is checked, an adapter's saved one too; asking transformers for its scheduler
# names imports transformers and torch (about 3 s on two cores), which answering with CTranslate2
# otherwise never pays. These common names are transformers' own; any other name is checked there.
COMMON_SCHEDULERS = frozenset(
    {"linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt"}
)


def _scheduler_names() -> list[str]:
    try:
        from transformers.trainer_utils import SchedulerType
    except ImportError:  # validation without transformers: leave the check to the Trainer
        return []
    return [s.value for s in SchedulerType]
