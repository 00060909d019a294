"""`loraqa eval`'s tables of figures, from the summary run_eval returns."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_retrieval(r: dict) -> None:
    table = Table(
        title=f"without their passages: {r['questions']} questions searched in collection {r['collection']} "
        f"(answered with {r['mode']} search)"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for mode, figures in r["modes"].items():
        for k in ("recall@1", "recall@5", "recall@20"):
            table.add_row(f"{k} ({mode})", f"{figures[k]:.2f}")
        table.add_row(f"MRR ({mode})", f"{figures['mrr']:.3f}")
    table.add_row("EM / F1 from retrieved passages", f"{r['exact_match']:.2f} / {r['f1']:.2f}")
    table.add_row("EM / F1 from the given passages", f"{r['given_exact_match']:.2f} / {r['given_f1']:.2f}")
    if "abstained_when_held_out" in r:
        table.add_row(
            f"abstained, context held out ({r['held_out_questions']} questions)", f"{r['abstained_when_held_out']:.2f}%"
        )
    Console(soft_wrap=True).print(table)


def print_table(summary: dict) -> None:
    base = summary.get("baseline")
    table = Table(title=f"{summary['total']} questions")
    table.add_column("metric")
    table.add_column("adapter", justify="right")
    if base:
        table.add_column("base model", justify="right")
        table.add_column("difference", justify="right")
    keys = [
        "exact_match",
        "f1",
        "rouge_l",
        "sas",
        "HasAns_exact",
        "HasAns_f1",
        "NoAns_exact",
        "NoAns_f1",
        "best_exact",
        "best_f1",
    ]
    shown = [(k, 1) for k in keys if k in summary] + [("token_accuracy", 100), ("extractiveness", 100)]
    for key, scale in shown:
        if summary[key] is None:
            continue
        cells = [key, f"{scale * summary[key]:.2f}"]
        if base:
            cells += [f"{scale * base[key]:.2f}", f"{scale * (summary[key] - base[key]):+.2f}"]
        table.add_row(*cells)
    for key, label in (
        ("f1_at_50", "F1, 50% most confident"),
        ("f1_at_80", "F1, 80% most confident"),
        ("auroc", "AUROC of score, right vs wrong"),
    ):
        values = [x["risk_coverage"][key] for x in ([summary] + ([base] if base else []))]
        cells = [f"{v:.2f}" if v is not None else "-" for v in values]
        table.add_row(label, *cells, *([""] if base else []))
    table.add_row(
        "answers/s", f"{summary['answers_per_second']}", *([f"{base['answers_per_second']}", ""] if base else [])
    )
    Console(soft_wrap=True).print(table)
