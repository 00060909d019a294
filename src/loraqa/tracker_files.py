"""A run's files logged to its tracker: the adapter (typed `model`: weights, loraqa config,
calibration, domain profile, tokenizer), the data it was trained on (`dataset`: data_report.json
and split.json) and evaluation answers (`predictions`). W&B gets artifacts (offline unless
WANDB_API_KEY is set, like the rest of the tracking; `wandb sync` uploads them later); MLflow
gets the same files as run artifacts; TensorBoard has no equivalent, so nothing is logged there.

The tracker's run id is noted in the run directory (tracking.json) when training starts, so
`loraqa eval --track` logs its results into the run the adapter came from.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from loraqa.errors import LoraqaError

MODEL, DATASET, PREDICTIONS = "model", "dataset", "predictions"
TRAIN_PREDICTIONS = "eval_predictions.jsonl"  # the last evaluation during training
TRACKING_FILE = "tracking.json"  # which tracker run holds this run (so `loraqa eval --track` finds it)


def allow_file_store(tracking_uri: str) -> None:
    """MLflow 3 refuses its file store unless MLFLOW_ALLOW_FILE_STORE is set (it wants a database
    or a server). A run's own mlruns/ folder is what keeps MLflow tracking local and self-contained,
    as W&B's offline files are, so loraqa opts in for that store; a tracking URI the user set to a
    database or server is left as it is."""
    if tracking_uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def tracker_run(run_dir: Path) -> dict | None:
    try:
        data = json.loads((Path(run_dir) / TRACKING_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "report_to" in data and "id" in data else None


def _name(run_dir: Path, suffix: str) -> str:
    # W&B artifact names: letters, digits, dashes, underscores and dots
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"{run_dir.name}-{suffix}")[:120]


def training_artifacts(run_dir: Path) -> list[tuple[str, str, list[Path]]]:
    """(name, type, files or folders) of what a finished training run logs."""
    out = [
        (_name(run_dir, "adapter"), MODEL, [run_dir / "adapter"]),
        (
            _name(run_dir, "data"),
            DATASET,
            [p for p in (run_dir / "data_report.json", run_dir / "split.json", run_dir / "config.yaml") if p.is_file()],
        ),
    ]
    if (run_dir / TRAIN_PREDICTIONS).is_file():
        out.append((_name(run_dir, "predictions"), PREDICTIONS, [run_dir / TRAIN_PREDICTIONS]))
    return out


def log_training_artifacts(report_to: str, run_dir: Path) -> None:
    """At the end of training, in the tracker run the Trainer's integration opened."""
    items = training_artifacts(run_dir)
    if report_to == "wandb":
        import wandb

        if wandb.run is None:
            return
        _to_wandb(wandb.run, items)
        wandb.finish()  # flush the offline run to disk now, not at interpreter exit
    elif report_to == "mlflow":
        note = tracker_run(run_dir)
        if note and note.get("report_to") == "mlflow":
            _to_mlflow(note, items)


def log_eval(run_dir: Path, eval_dir: Path, summary: dict) -> str:
    """`loraqa eval --track`: the evaluation's figures and answers, into the training run's
    tracker run. Returns where they went, for the user."""
    note = tracker_run(run_dir) if run_dir is not None else None
    if not note:
        raise LoraqaError(
            f"{run_dir} has no tracker run to log to (it was trained with track.report_to=none or "
            "tensorboard, or before runs noted theirs); evaluate without --track"
        )
    metrics = {
        f"final_eval/{k}": v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    items = [
        (
            _name(run_dir, f"eval-{eval_dir.name}"),
            PREDICTIONS,
            [p for p in (eval_dir / "predictions.jsonl", eval_dir / "summary.json") if p.is_file()],
        )
    ]
    if note["report_to"] == "wandb":
        import wandb

        os.environ.setdefault("WANDB_MODE", "online" if os.environ.get("WANDB_API_KEY") else "offline")
        run = wandb.init(
            project=note.get("project"),
            id=note["id"],
            resume="allow",
            dir=str(run_dir),
            settings=wandb.Settings(silent=True),
        )
        run.summary.update(metrics)
        _to_wandb(run, items)
        wandb.finish()
        return f"W&B run {note['id']} ({os.environ['WANDB_MODE']})"
    if note["report_to"] == "mlflow":
        import mlflow

        allow_file_store(note["tracking_uri"])
        mlflow.set_tracking_uri(note["tracking_uri"])
        with mlflow.start_run(run_id=note["id"]):
            mlflow.log_metrics({k.replace("/", "."): float(v) for k, v in metrics.items()})
        _to_mlflow(note, items)
        return f"MLflow run {note['id']}"
    raise LoraqaError(f"{run_dir}/tracking.json names an unknown tracker {note['report_to']!r}")


def _to_wandb(run, items) -> None:
    import wandb

    for name, kind, paths in items:
        if not paths:
            continue
        artifact = wandb.Artifact(name, type=kind)
        for path in paths:
            if path.is_dir():
                artifact.add_dir(str(path))
            else:
                artifact.add_file(str(path))
        run.log_artifact(artifact)


def _to_mlflow(note: dict, items) -> None:
    import mlflow

    allow_file_store(note["tracking_uri"])
    mlflow.set_tracking_uri(note["tracking_uri"])
    with mlflow.start_run(run_id=note["id"]):
        for _, kind, paths in items:
            for path in paths:
                if path.is_dir():
                    mlflow.log_artifacts(str(path), artifact_path=kind)
                else:
                    mlflow.log_artifact(str(path), artifact_path=kind)
