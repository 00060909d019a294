"""`loraqa report RUN_DIR`: the run's curves as a PNG and an HTML page, no tracker account needed."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from loraqa.errors import LoraqaError
from loraqa.output_files import write_atomic


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise LoraqaError(f"{run_dir} has no metrics.jsonl; pass a run directory written by `loraqa train`")
    records = []
    lines = [line for line in path.read_text().split("\n") if line.strip()]
    for n, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(lines):  # a crash mid-append leaves a torn last line: the rest is good
                break
            raise LoraqaError(f"{path} line {n} is not JSON; the file was damaged") from None
    return records


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    # a resumed run may log a step twice: keep the latest value per step
    points = {r["step"]: r[key] for r in records if key in r and r[key] is not None}
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def make_report(run_dir: str | Path) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    if not any("loss" in r or "eval/loss" in r for r in records):
        raise LoraqaError(f"{run_dir}/metrics.jsonl has no loss records yet; train for at least train.logging_steps")
    evaluation = read_eval_summary(run_dir)
    curve = (evaluation or {}).get("risk_coverage", {}).get("curve")
    fig, axes = plt.subplots(1, 3 if curve else 2, figsize=(18 if curve else 12, 4.5))
    ax_loss, ax_answers = axes[0], axes[1]
    for key, label in (("loss", "train loss"), ("eval/loss", "eval loss")):
        steps, values = series(records, key)
        if steps:
            ax_loss.plot(steps, values, marker="o" if key.startswith("eval") else None, label=label)
    ax_loss.set(xlabel="step", ylabel="loss", title="Loss")
    ax_loss.legend()
    for key, label in (("eval/exact_match", "exact match (%)"), ("eval/f1", "F1 (%)"), ("eval/rouge_l", "ROUGE-L (%)")):
        steps, values = series(records, key)
        if steps:
            ax_answers.plot(steps, values, marker="o", label=label)
    steps, values = series(records, "eval/token_accuracy")
    if steps:
        ax_answers.plot(
            steps, [100 * v for v in values], linestyle="--", marker="s", label="token accuracy (%), teacher-forced"
        )
    ax_answers.set(xlabel="step", ylabel="%", ylim=(0, 100), title="Generated answers vs token accuracy")
    if ax_answers.lines:
        ax_answers.legend()
    else:
        ax_answers.text(
            0.5,
            0.5,
            "no evaluation during training\n(train.eval_steps = 0)",
            ha="center",
            va="center",
            transform=ax_answers.transAxes,
        )
    if curve and evaluation is not None:
        draw_risk_coverage(axes[2], curve, evaluation)
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    png = run_dir / "report.png"
    tmp = png.with_name(".report.png.tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(png)
    page = run_dir / "report.html"
    write_atomic(page, _html(run_dir, records, png))
    return png, page


def read_eval_summary(run_dir: Path) -> dict | None:
    path = run_dir / "eval" / "summary.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


def draw_risk_coverage(ax, curve: list, evaluation: dict) -> None:
    """F1 when answering only the most confident share of the questions (by answer score):
    a curve that falls to the right means the score tells right answers from wrong ones."""
    coverage, f1 = zip(*curve)
    ax.plot([100 * c for c in coverage], f1, label="F1 of the answered questions")
    auroc = evaluation["risk_coverage"].get("auroc")
    ax.set(
        xlabel="coverage: questions answered, most confident first (%)",
        ylabel="F1 (%)",
        ylim=(0, 100),
        xlim=(0, 100),
        title="Risk-coverage (loraqa eval)" + (f", AUROC {auroc:.2f}" if auroc is not None else ""),
    )
    ax.legend()


def _html(run_dir: Path, records: list[dict], png: Path) -> str:
    image = base64.b64encode(png.read_bytes()).decode()
    best = next((r for r in reversed(records) if "best_checkpoint" in r), None)
    summary: dict = next((r for r in reversed(records) if "train_runtime" in r), {})
    facts = []
    if best:
        facts.append(f"best F1 {best['best_f1']:.2f} at {best['best_checkpoint']} (kept as the adapter)")
    if summary:
        facts.append(
            f"trained {summary.get('step')} steps in {summary.get('train_runtime', 0):.0f} s, "
            f"{summary.get('train_samples_per_second', 0):.2f} examples/s"
        )
    s = read_eval_summary(run_dir)
    if s:
        rouge = f", ROUGE-L {s['rouge_l']:.2f}" if s.get("rouge_l") is not None else ""
        facts.append(f"loraqa eval: EM {s['exact_match']:.2f}, F1 {s['f1']:.2f}{rouge} on {s['total']} questions")
        rc = s.get("risk_coverage")
        if rc:
            facts.append(
                f"F1 of the 50% / 80% most confident answers: {rc['f1_at_50']:.2f} / {rc['f1_at_80']:.2f}"
                + (f"; AUROC of the score (right vs wrong) {rc['auroc']:.2f}" if rc.get("auroc") is not None else "")
            )
    items = "".join(f"<li>{html.escape(f)}</li>" for f in facts)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(run_dir.name)}</title></head>"
        f"<body style='font-family:sans-serif;max-width:1400px;margin:auto'><h1>{html.escape(run_dir.name)}</h1>"
        f"<ul>{items}</ul><img alt='loss and answer metrics' style='max-width:100%' "
        f"src='data:image/png;base64,{image}'></body></html>\n"
    )
