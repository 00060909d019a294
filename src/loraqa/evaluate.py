"""Evaluate an adapter by the answers it generates (EM / F1), optionally against its base model."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from loraqa.errors import LoraqaError
from loraqa.metrics import extractiveness, score_one, squad_summary, token_accuracy
from loraqa.rundir import write_atomic, write_json

ADAPTER_CONFIG_NAME = "loraqa_config.yaml"


@dataclass
class AdapterRef:
    adapter_dir: Path
    run_dir: Path | None
    config: object  # loraqa Config the adapter was trained with


def resolve_adapter(path: str | Path) -> AdapterRef:
    """A run directory or an adapter directory, with the config the adapter was trained with."""
    from loraqa.train import load_saved_config

    p = Path(path)
    if (p / "adapter" / "adapter_config.json").is_file() and (p / "config.yaml").is_file():
        return AdapterRef(p / "adapter", p, load_saved_config(p / "config.yaml"))
    if (p / "adapter_config.json").is_file():
        for cfg_path in (p / ADAPTER_CONFIG_NAME, p.parent / "config.yaml"):
            if cfg_path.is_file():
                run_dir = p.parent if cfg_path.name == "config.yaml" else None
                return AdapterRef(p, run_dir, load_saved_config(cfg_path))
        raise LoraqaError(f"{p} has no {ADAPTER_CONFIG_NAME}: loraqa cannot tell which prompt template it was "
                          "trained with; use an adapter written by `loraqa train`")
    if not p.exists():
        raise LoraqaError(f"{p} does not exist; pass a run directory (runs/NAME) or its adapter/ folder")
    raise LoraqaError(f"{p} holds no adapter (adapter_config.json); pass a run directory whose training finished, "
                      "or an adapter folder")


def as_official(predictions: list[str], no_answer_text: str) -> list[str]:
    """A model trained on SQuAD v2 writes the no-answer text; the official format for it is ""."""
    return ["" if p.strip() == no_answer_text else p for p in predictions]


def score_rows(rows: list[dict], predictions: list[str]) -> tuple[list[dict], dict]:
    version = "v2" if any(not r["answers"]["text"] for r in rows) else "v1"
    items = []
    for row, pred in zip(rows, predictions):
        refs = row["answers"]["text"]
        em, f1 = score_one(pred, refs, version)
        items.append({"id": row["id"], "question": row["question"], "prediction": pred, "references": refs,
                      "em": em, "f1": round(f1, 6), "has_answer": bool(refs)})
    summary = squad_summary(items, version)
    if "exact" in summary:
        summary = {"exact_match": summary["exact"], **summary}
    summary.setdefault("total", len(items))
    summary["version"] = version
    summary["extractiveness"] = extractiveness(predictions, [r["context"] for r in rows])
    return items, summary


@torch.inference_mode()
def teacher_forced_accuracy(model, tokenizer, rows: list[dict], data_cfg, batch_size: int, autocast_bf16: bool) -> float:
    """The seed's metric: next-token accuracy given the true previous tokens, padding excluded."""
    from transformers import DataCollatorForSeq2Seq

    from loraqa.features import FeatureCounts, encode_row

    counts = FeatureCounts()
    feats = [encode_row(tokenizer, r, data_cfg.template, data_cfg.max_source_length, data_cfg.max_target_length,
                        data_cfg.unanswerable_text, False, counts) for r in rows]
    feats = [{k: f[k] for k in ("input_ids", "attention_mask", "labels")} for f in feats if f]
    collate = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)
    device = next(model.parameters()).device
    preds, labels = [], []
    was_training = model.training
    model.eval()
    for i in range(0, len(feats), batch_size):
        batch = collate(feats[i:i + batch_size]).to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
            logits = model(**batch).logits
        preds += logits.argmax(-1).cpu().tolist()
        labels += batch["labels"].cpu().tolist()
    model.train(was_training)
    return token_accuracy(preds, labels)


def evaluate_model(answerer, name: str, rows: list[dict], cfg, progress=None) -> tuple[list, dict]:
    """Generate, score and time answers for `rows` with one of the Answerer's adapters, or the
    base model ("base") prompted exactly as that adapter is."""
    from contextlib import nullcontext

    from loraqa.answer import BASE

    requests = [{"question": r["question"], "context": r["context"], "adapter": name, "like": "adapter"} for r in rows]
    start = time.perf_counter()
    preds = answerer.answer(requests, batch_size=cfg.eval.batch_size, progress=progress, num_beams=cfg.eval.num_beams)
    seconds = time.perf_counter() - start
    items, summary = score_rows(rows, preds)  # the Answerer already maps the no-answer text to ""
    with answerer.lock, (answerer.model.disable_adapter() if name == BASE else nullcontext()):
        if name != BASE:
            answerer.model.set_adapter(name)
        summary["token_accuracy"] = teacher_forced_accuracy(answerer.model, answerer.tokenizer, rows, cfg.data,
                                                            cfg.eval.batch_size, autocast_bf16=False)
    summary["seconds"] = round(seconds, 3)
    summary["answers_per_second"] = round(len(rows) / seconds, 3) if seconds > 0 else None
    return items, summary


def write_eval_files(out: Path, items: list[dict], summary: dict, prefix: str = "") -> None:
    write_atomic(out / f"{prefix}predictions.jsonl", "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items))
    write_json(out / f"{prefix}predictions.json", {i["id"]: i["prediction"] for i in items})


class AnswerMetrics:
    """The Trainer's compute_metrics: token accuracy from the eval loop, plus EM/F1 of answers
    generated for a fixed subset of held-out questions. Answers are decoded batch by batch on
    the host, so predictions never pile up on the device (transformers #17089)."""

    def __init__(self, rows: list[dict], cfg, tokenizer, autocast_bf16: bool):
        self.rows, self.cfg, self.tokenizer, self.bf16 = rows, cfg, tokenizer, autocast_bf16
        self.model = None  # set to the trainer's model once it exists

    def __call__(self, eval_pred) -> dict:
        from loraqa.answer import generate_answers

        metrics = {"token_accuracy": token_accuracy(eval_pred.predictions, eval_pred.label_ids)}
        if self.rows and self.model is not None:
            c = self.cfg
            preds = generate_answers(self.model, self.tokenizer, self.rows, c.data.template, c.data.max_source_length,
                                     c.eval.max_new_tokens, c.eval.batch_size, c.eval.num_beams,
                                     autocast_bf16=self.bf16)
            _, summary = score_rows(self.rows, as_official(preds, c.data.unanswerable_text))
            metrics.update(exact_match=summary["exact_match"], f1=summary["f1"])
        return metrics


def logits_to_ids(logits, labels):
    """Keep only argmax ids between eval batches instead of full vocabulary logits."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(-1)
