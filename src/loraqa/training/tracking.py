"""Experiment tracking: W&B (offline without an API key), TensorBoard, MLflow, or none.

transformers' own integration callbacks do the logging; this module points each one at the
run directory, checks the package is installed before any compute, and logs loraqa's resolved
config (the integrations log only TrainingArguments by themselves).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from transformers import TrainerCallback

from loraqa import optional
from loraqa.distributed import is_main_process
from loraqa.tracker_files import TRACKING_FILE, allow_file_store

_PACKAGE = {"wandb": "wandb", "tensorboard": "tensorboard", "mlflow": "mlflow"}


def check_tracker(report_to: str) -> None:
    if report_to in _PACKAGE:
        optional.check(_PACKAGE[report_to], f"track.report_to={report_to}", "or set track.report_to=none")


def setup_tracking(track, run_dir: Path, run_name: str) -> list[str]:
    """Environment for the chosen tracker; returns the Trainer's report_to list."""
    check_tracker(track.report_to)
    if track.report_to == "wandb":
        os.environ["WANDB_DIR"] = str(run_dir)
        os.environ["WANDB_PROJECT"] = track.project
        os.environ.setdefault("WANDB_MODE", "online" if os.environ.get("WANDB_API_KEY") else "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        if is_main_process():
            # Opened here, in this run's directory, for transformers' callback to use: left to it,
            # a second training in one process would log into the first one's W&B run (it reuses
            # any open run), and wandb reads WANDB_DIR only once per process.
            import wandb

            if wandb.run is not None:
                wandb.finish()
            wandb.init(project=track.project, name=run_name, dir=str(run_dir))
    elif track.report_to == "tensorboard":
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")
    elif track.report_to == "mlflow":
        os.environ.setdefault("MLFLOW_TRACKING_URI", (run_dir / "mlruns").resolve().as_uri())
        allow_file_store(os.environ["MLFLOW_TRACKING_URI"])
        os.environ["MLFLOW_EXPERIMENT_NAME"] = track.project
    return [] if track.report_to == "none" else [track.report_to]


class ConfigLogCallback(TrainerCallback):
    """Logs the resolved loraqa config to the active tracker once training starts, and notes the
    tracker's run id in the run directory."""

    def __init__(self, config: dict, report_to: str, trainer=None, run_dir: Path | None = None):
        self.config = config
        self.report_to = report_to
        self.trainer = trainer
        self.run_dir = run_dir

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self._note_run_id()
        flat = {f"loraqa/{s}.{k}": v for s, sec in self.config.items() if isinstance(sec, dict) for k, v in sec.items()}
        if self.report_to == "wandb":
            import wandb

            if wandb.run is not None:
                wandb.config.update(
                    {k: (json.dumps(v) if isinstance(v, list) else v) for k, v in flat.items()}, allow_val_change=True
                )
        elif self.report_to == "mlflow":
            import mlflow

            if mlflow.active_run() is not None:
                mlflow.log_params({k.replace("/", "."): str(v)[:250] for k, v in flat.items()})
        elif self.report_to == "tensorboard" and self.trainer is not None:
            for cb in self.trainer.callback_handler.callbacks:
                writer = getattr(cb, "tb_writer", None)
                if writer is not None:
                    writer.add_text("loraqa_config", "```\n" + json.dumps(self.config, indent=2) + "\n```")

    def _note_run_id(self) -> None:
        note = None
        if self.report_to == "wandb":
            import wandb

            if wandb.run is not None:
                note = {"report_to": "wandb", "id": wandb.run.id, "project": wandb.run.project}
        elif self.report_to == "mlflow":
            import mlflow

            active = mlflow.active_run()
            if active is not None:
                note = {
                    "report_to": "mlflow",
                    "id": active.info.run_id,
                    "tracking_uri": mlflow.get_tracking_uri(),
                }
        if note and self.run_dir is not None:
            (Path(self.run_dir) / TRACKING_FILE).write_text(json.dumps(note) + "\n")


class MetricsFileCallback(TrainerCallback):
    """Appends every logged record, with its step, to metrics.jsonl (rank 0 only)."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        # eval_f1 -> eval/f1: the names the trackers show
        logs = {(f"eval/{k[5:]}" if k.startswith("eval_") else k): v for k, v in logs.items()}
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
