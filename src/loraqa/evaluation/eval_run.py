"""`loraqa eval`: pick the questions, load base + adapter once, answer, score the adapter (and the base)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import DataCollatorForSeq2Seq

from loraqa.adapters.calibration import CALIBRATION_NAME, read_calibration, write_calibration
from loraqa.adapters.folder import resolve_adapter
from loraqa.config import config_from_dict, merge, parse_set
from loraqa.config.templates import uses_context
from loraqa.data.features import FeatureCounts, encode_row
from loraqa.data.loading import load_rows
from loraqa.data.splitting import DataReport, clean_rows
from loraqa.data.tasks import rows_for_task
from loraqa.distributed import in_shares, is_main_process, process_device
from loraqa.errors import LoraqaError, UsageError, option
from loraqa.evaluation.calibration import best_thresholds, na_prob, risk_coverage, score_threshold
from loraqa.evaluation.metrics import token_accuracy
from loraqa.evaluation.retrieval_eval import PassageSource, evaluate_retrieval
from loraqa.evaluation.scoring import score_rows
from loraqa.hub import looks_like_path
from loraqa.inference.answerer import BASE, Answerer
from loraqa.inference.engines import capabilities_of
from loraqa.inference.library import CollectionSettings
from loraqa.output_files import jsonl_line, write_atomic, write_json
from loraqa.reporting import say


def eval_rows(ref, data: str | None, limit: int | None) -> tuple[list[dict], str]:
    """The questions to score and where they came from.

    Default: the run's held-out questions (split.json); without a run, the source's official
    validation split."""
    cfg = ref.config
    needs_context = uses_context(cfg.data.template)
    if data:
        rows, where = load_rows(data, split="validation"), data
    elif ref.run_dir is not None and (ref.run_dir / "split.json").is_file():
        test_ids = set(json.loads((ref.run_dir / "split.json").read_text())["test"])
        rows = [r for r in load_rows(cfg.data.source) if r["id"] in test_ids]
        where = f"held-out questions of {cfg.data.source}"
        if not rows:
            raise LoraqaError(
                f"none of the run's held-out questions are in {cfg.data.source} any more; pass {option('data')}"
            )
    elif not looks_like_path(cfg.data.source):
        rows, where = load_rows(cfg.data.source, split="validation"), f"{cfg.data.source} (validation)"
    else:
        raise LoraqaError(f"this adapter has no record of held-out questions; pass {option('data')}")
    report = DataReport()
    rows = rows_for_task(clean_rows(rows, needs_context, report), cfg.data.task)
    if not rows:
        raise LoraqaError(f"{where} has no usable questions")
    if limit:
        rows = rows[:limit]
    return rows, where


@torch.inference_mode()
def teacher_forced_accuracy(model, tokenizer, rows: list[dict], data_cfg, batch_size: int) -> float:
    """The seed's metric: next-token accuracy given the true previous tokens, padding excluded."""
    collate = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)
    device = next(model.parameters()).device

    def predict(share: list[dict]) -> list[tuple[list, list] | None]:
        """Per row: argmax ids and labels, or None for a row that gives no features."""
        counts = FeatureCounts()
        feats = [encode_row(tokenizer, r, data_cfg, False, counts) or {} for r in share]
        kept = [i for i, f in enumerate(feats) if f]
        out: list[tuple[list, list] | None] = [None] * len(share)
        for i in range(0, len(kept), batch_size):
            idx = kept[i : i + batch_size]
            batch = collate([{k: feats[j][k] for k in ("input_ids", "attention_mask", "labels")} for j in idx])
            batch = batch.to(device)
            preds, labels = model(**batch).logits.argmax(-1).cpu().tolist(), batch["labels"].cpu().tolist()
            for j, p, lab in zip(idx, preds, labels):
                out[j] = (p, lab)
        return out

    pairs = [p for p in in_shares(predict, rows)[0] if p is not None]
    return token_accuracy([p for p, _ in pairs], [lab for _, lab in pairs])


def evaluate_model(answerer: Answerer, name: str, rows: list[dict], cfg, progress=None) -> tuple[list, dict]:
    """Generate, score and time answers for `rows` with one of the Answerer's adapters, or the
    base model ("base") prompted exactly as that adapter is. Under torchrun each process answers
    its share of the rows; every process gets all answers back."""

    def answer(share: list[dict]) -> list:
        requests = [
            {"question": r["question"], "context": r["context"], "adapter": name, "like": "adapter"} for r in share
        ]
        return answerer.answer(
            requests, batch_size=cfg.eval.batch_size, progress=progress, num_beams=cfg.eval.num_beams
        )

    start = time.perf_counter()
    answers, shares = in_shares(answer, rows)
    seconds = time.perf_counter() - start
    items, summary = score_rows(rows, [a.answer for a in answers])  # abstentions are already ""
    for item, a in zip(items, answers):
        item.update(score=a.score, no_answer=a.no_answer, start=a.start, end=a.end, windows=a.windows)
    summary.update(confidence_summary(items))
    summary["windows"] = sum(a.windows for a in answers)
    summary["questions_per_process"] = shares
    summary["token_accuracy"] = None  # not for engines without teacher forcing (CTranslate2)
    if answerer.engine.capabilities.teacher_forcing:
        with answerer.scoring_model(name) as model:
            summary["token_accuracy"] = teacher_forced_accuracy(
                model, answerer.tokenizer, rows, cfg.data, cfg.eval.batch_size
            )
    summary["seconds"] = round(seconds, 3)
    summary["answers_per_second"] = round(len(rows) / seconds, 3) if seconds > 0 else None
    return items, summary


def confidence_summary(items: list[dict]) -> dict:
    """The official v2 best thresholds over the answers' no-answer probabilities, and the risk-coverage summary."""
    preds = {i["id"]: i["prediction"] for i in items}
    na_probs = {i["id"]: na_prob(i["score"], i["no_answer"]) for i in items}
    best = best_thresholds(
        preds,
        {i["id"]: i["em"] for i in items},
        {i["id"]: i["f1"] for i in items},
        na_probs,
        {i["id"]: i["has_answer"] for i in items},
    )
    scores = [i["score"] if i["score"] is not None else float("-inf") for i in items]
    return best | {"risk_coverage": risk_coverage(scores, [i["f1"] for i in items], [i["em"] for i in items])}


def calibrate(ref, summary: dict, items: list[dict], where: str) -> str | None:
    """Save the no-answer threshold beside the adapter, when the questions could teach one:
    abstaining can only be right where some questions have no answer."""
    if "NoAns_total" not in summary:
        return None
    answer_scores = [i["score"] for i in items if not i["no_answer"]]
    threshold = score_threshold(summary["best_f1_thresh"], answer_scores)
    write_calibration(
        ref.adapter_dir,
        {
            "no_answer_threshold": threshold,
            "na_prob_threshold": summary["best_f1_thresh"],
            "best_f1": summary["best_f1"],
            "f1_without_threshold": summary["f1"],
            "questions": summary["total"],
            "data": where,
        },
    )
    shown = "never abstain" if threshold is None else f"abstain below score {threshold:.3f}"
    return (
        f"no-answer threshold ({shown}; best F1 {summary['best_f1']:.2f}) saved to {ref.adapter_dir / CALIBRATION_NAME}"
    )


def write_eval_files(out: Path, items: list[dict], summary: dict, prefix: str = "") -> None:
    write_atomic(out / f"{prefix}predictions.jsonl", "".join(jsonl_line(i) for i in items))
    write_json(out / f"{prefix}predictions.json", {i["id"]: i["prediction"] for i in items})


@dataclass
class EvalOptions:
    """What `loraqa eval` takes beside the adapter. allow_pickle is the caller's choice alone, never
    read from the adapter's own saved config. retrieve: also ask each question without its passage,
    from `collection` (of `store`) or from a collection of the data's contexts, a share
    `holdout_contexts` of them left out (evaluation/retrieval_eval.py). track: log the figures and
    answers into the tracker run the adapter was trained in (tracker_files.py). similarity_model: a
    local model that also scores semantic answer similarity (evaluation/similarity.py). embedder,
    mode: with retrieve, the sentence-embedding model (vectors for the collection of the data's
    contexts, or the one to embed questions with) and the search mode to answer with."""

    data: str | None = None
    limit: int | None = None
    baseline: bool = False
    output: str | None = None
    model_override: str | None = None
    sets: list[str] = field(default_factory=list)
    engine: str = "pytorch"
    allow_pickle: bool = False
    retrieve: bool = False
    collection: str | None = None
    store: str | None = None
    holdout_contexts: float = 0.0
    track: bool = False
    similarity_model: str | None = None
    embedder: str | None = None
    mode: str | None = None


def run_eval(
    target: str, options: EvalOptions | None = None, progress: Callable[[str, int, int], None] | None = None
) -> dict:
    """Score an adapter (or export) by the answers it generates.

    Args:
        target: A run directory, an adapter folder or a CTranslate2 export.
        options: Which questions, the baseline, calibration, retrieval, tracking (EvalOptions).
        progress: Called with (task, windows done, windows in all); what it does is said on the
            `loraqa.progress` logger.

    Returns:
        The summary (also written to summary.json beside the answers): exact match and F1 of
        the adapter, and of the base model with `baseline`, with timings and calibration.

    Raises:
        LoraqaError: A target that is not an adapter, questions that cannot be read, an option
            the engine cannot honour.
    """
    o = options or EvalOptions()
    if (o.collection or o.holdout_contexts) and not o.retrieve:
        raise UsageError(
            f"a collection and held-out contexts are for answering without passages: add {option('retrieve')}"
        )
    if not 0 <= o.holdout_contexts < 1:
        raise UsageError(f"the held-out share of contexts must be in [0, 1), got {o.holdout_contexts}")
    if o.baseline and not capabilities_of(o.engine).base_model:
        raise UsageError(
            f"{option('baseline')} needs an engine with a separate base model (pytorch): an exported model has none"
        )
    ref = resolve_adapter(target)
    if o.track:
        from loraqa.tracker_files import tracker_run  # the trackers' clients (wandb, mlflow) only with --track

        if ref.run_dir is None or tracker_run(ref.run_dir) is None:
            raise UsageError(
                f"{target} has no tracker run to log to (trained with track.report_to=none or "
                "tensorboard, or not a run directory); evaluate without --track"
            )
    if o.sets:  # eval-time overrides (e.g. eval.batch_size) apply to the adapter's own config
        ref.config = config_from_dict(merge(ref.config.to_dict(), parse_set(o.sets)))
    out = Path(o.output) if o.output else (ref.run_dir or ref.adapter_dir.parent) / "eval"
    rows, where = eval_rows(ref, o.data, o.limit)
    similarity = None
    if o.similarity_model is not None:  # loaded first: a bad path fails before any answering
        from loraqa.evaluation.similarity import AnswerSimilarity  # sentence-transformers only when asked

        similarity = AnswerSimilarity(o.similarity_model)
    dtype = ref.config.model.dtype if ref.config.model.dtype != "fp16" else "auto"
    # answers as the model gives them: the threshold is calibrated from them, not applied to them
    answerer = Answerer(
        {"adapter": ref},
        base_model=o.model_override,
        device=process_device(ref.config.model.device),
        dtype=dtype,
        allow_pickle=o.allow_pickle,
        engine=o.engine,
        collections=CollectionSettings(o.store),
    )
    answerer.apply_threshold = False
    if o.collection is not None:
        answerer.library.open(o.collection)  # an unknown collection is refused before any answering
    main = is_main_process()  # under torchrun: every process answers its share, the first one reports
    if main:
        say(f"evaluating {ref.adapter_dir} on {len(rows)} questions from {where} ({answerer.dtype})")
    results = {}
    for name in ["adapter"] + ([BASE] if o.baseline else []):
        task = f"answering ({name}), windows"
        counted = (lambda done, total, t=task: progress(t, done, total)) if progress and main else None
        results[name] = evaluate_model(answerer, name, rows, ref.config, counted)
    if similarity is not None and main:
        from loraqa.evaluation.similarity import add_similarity  # sentence-transformers only when asked

        for found_items, found_summary in results.values():
            add_similarity(found_items, found_summary, similarity)
    items, summary = results["adapter"]
    summary.update(
        {
            "data": where,
            "adapter": str(ref.adapter_dir),
            "device": answerer.device,
            "dtype": answerer.dtype,
            "engine": o.engine,
        }
    )
    if not main:
        return summary
    write_eval_files(out, items, summary)
    if o.baseline:
        base_items, base_summary = results[BASE]
        write_eval_files(out, base_items, base_summary, prefix="baseline_")
        summary["baseline"] = base_summary
    write_json(out / "summary.json", summary)
    say(f"wrote {out}/predictions.jsonl, predictions.json, summary.json")
    note = calibrate(ref, summary, items, where)
    if note:
        say(note)
    if o.retrieve:
        threshold = (read_calibration(ref.adapter_dir) or {}).get("no_answer_threshold")
        source = PassageSource(o.collection, o.holdout_contexts, ref.config.data.seed, o.embedder)
        summary["retrieval"] = evaluate_retrieval(
            answerer, rows, items, source, ref.config.eval.batch_size, threshold, mode=o.mode
        )
        write_json(out / "summary.json", summary)
    if o.track and ref.run_dir is not None:
        from loraqa.tracker_files import log_eval  # the trackers' clients only with --track

        say(f"logged the results to {log_eval(ref.run_dir, out, summary)}")
    return summary
