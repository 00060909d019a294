"""`loraqa eval`: pick the questions, load base + adapter once, score the adapter (and the base)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from loraqa.errors import LoraqaError
from loraqa.evaluate import evaluate_model, resolve_adapter, write_eval_files
from loraqa.rundir import write_json

console = Console(stderr=True, soft_wrap=True)


def eval_rows(ref, data: str | None, limit: int | None) -> tuple[list[dict], str]:
    """The questions to score and where they came from.

    Default: the run's held-out questions (split.json); without a run, the source's official
    validation split."""
    from loraqa.data import DataReport, clean_rows, load_rows
    from loraqa.hub import looks_like_path
    from loraqa.prompts import uses_context

    cfg = ref.config
    needs_context = uses_context(cfg.data.template)
    if data:
        rows, where = load_rows(data, split="validation"), data
    elif ref.run_dir is not None and (ref.run_dir / "split.json").is_file():
        test_ids = set(json.loads((ref.run_dir / "split.json").read_text())["test"])
        rows = [r for r in load_rows(cfg.data.source) if r["id"] in test_ids]
        where = f"held-out questions of {cfg.data.source}"
        if not rows:
            raise LoraqaError(f"none of the run's held-out questions are in {cfg.data.source} any more; "
                              "pass --data FILE")
    elif not looks_like_path(cfg.data.source):
        rows, where = load_rows(cfg.data.source, split="validation"), f"{cfg.data.source} (validation)"
    else:
        raise LoraqaError("this adapter has no record of held-out questions; pass --data FILE")
    report = DataReport()
    rows = clean_rows(rows, needs_context, report)
    if not rows:
        raise LoraqaError(f"{where} has no usable questions")
    if limit:
        rows = rows[:limit]
    return rows, where


def run_eval(target: str, data: str | None = None, limit: int | None = None, baseline: bool = False,
             output: str | None = None, model_override: str | None = None, sets: list[str] | None = None) -> dict:
    ref = resolve_adapter(target)
    if sets:
        from loraqa.config import config_from_dict, merge, parse_set

        ref.config = config_from_dict(merge(ref.config.to_dict(), parse_set(sets)))
    out = Path(output) if output else (ref.run_dir or ref.adapter_dir.parent) / "eval"
    rows, where = eval_rows(ref, data, limit)
    from loraqa.answer import BASE, Answerer

    dtype = ref.config.model.dtype if ref.config.model.dtype != "fp16" else "auto"
    answerer = Answerer({"adapter": str(ref.adapter_dir)}, base_model=model_override, device=ref.config.model.device,
                        dtype=dtype, allow_pickle=ref.config.model.allow_pickle)
    answerer.configs["adapter"] = ref.config  # with any --set overrides
    console.print(f"evaluating {ref.adapter_dir} on {len(rows)} questions from {where} ({answerer.dtype})")
    results = {}
    with Progress(console=console, transient=True) as bar:
        for name in ["adapter"] + ([BASE] if baseline else []):
            task = bar.add_task(f"answering ({name})", total=len(rows))
            results[name] = evaluate_model(answerer, name, rows, ref.config,
                                           lambda n, t=task: bar.advance(t, n))
    items, summary = results["adapter"]
    summary.update({"data": where, "adapter": str(ref.adapter_dir), "device": answerer.device,
                    "dtype": answerer.dtype})
    write_eval_files(out, items, summary)
    if baseline:
        base_items, base_summary = results[BASE]
        write_eval_files(out, base_items, base_summary, prefix="baseline_")
        summary["baseline"] = base_summary
    write_json(out / "summary.json", summary)
    print_table(summary)
    console.print(f"wrote {out}/predictions.jsonl, predictions.json, summary.json")
    return summary


def print_table(summary: dict) -> None:
    base = summary.get("baseline")
    table = Table(title=f"{summary['total']} questions")
    table.add_column("metric")
    table.add_column("adapter", justify="right")
    if base:
        table.add_column("base model", justify="right")
        table.add_column("difference", justify="right")
    keys = ["exact_match", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1"]
    shown = [(k, 1) for k in keys if k in summary] + [("token_accuracy", 100), ("extractiveness", 100)]
    for key, scale in shown:
        cells = [key, f"{scale * summary[key]:.2f}"]
        if base:
            cells += [f"{scale * base[key]:.2f}", f"{scale * (summary[key] - base[key]):+.2f}"]
        table.add_row(*cells)
    table.add_row("answers/s", f"{summary['answers_per_second']}", *( [f"{base['answers_per_second']}", ""] if base else []))
    Console(soft_wrap=True).print(table)
