"""A training run's adapter, data report and evaluation answers logged as W&B artifacts (offline,
as by default) and as MLflow run artifacts, and `loraqa eval --track` logging into the same run:
read back from the offline W&B run files with W&B's own record schema (their files staged byte
for byte), and from the run's MLflow store with MLflow's own client."""

from __future__ import annotations

import glob
import hashlib
import json
from pathlib import Path

import pytest

from helpers import run_cli, train_memoriser, wandb_offline_records


def artifacts_of(run_dir: Path) -> list:
    found = []
    for run_file in sorted(glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))):
        found += [
            r.artifact for r in wandb_offline_records(Path(run_file)) if r.WhichOneof("record_type") == "artifact"
        ]
    return found


def staged_matches(artifact, folder: Path) -> dict[str, bool]:
    """Each file of the artifact: is its staged copy the file in `folder`?"""
    out = {}
    for entry in artifact.manifest.contents:
        original = folder / entry.path
        out[entry.path] = (
            Path(entry.local_path).is_file()
            and original.is_file()
            and hashlib.md5(Path(entry.local_path).read_bytes()).digest() == hashlib.md5(original.read_bytes()).digest()
        )
    return out


def test_training_and_eval_log_their_files_as_wandb_artifacts(nodrop_model_dir, squad_rows, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # the staging area, not the home folder
    run = train_memoriser(
        nodrop_model_dir, squad_rows[:10], tmp_path, steps=4, sets=("track.report_to=wandb", "train.eval_steps=2")
    ).run_dir
    note = json.loads((run / "tracking.json").read_text())
    assert note["report_to"] == "wandb" and note["id"]
    artifacts = {a.type: a for a in artifacts_of(run)}
    assert set(artifacts) == {"model", "dataset", "predictions"}
    model = staged_matches(artifacts["model"], run / "adapter")
    assert {"adapter_model.safetensors", "adapter_config.json", "loraqa_config.yaml", "loraqa_domain.json"} <= set(
        model
    )
    assert all(model.values()), model
    assert staged_matches(artifacts["dataset"], run) == {
        "data_report.json": True,
        "split.json": True,
        "config.yaml": True,
    }
    answers = [json.loads(line) for line in (run / "eval_predictions.jsonl").read_text().splitlines()]
    test_ids = json.loads((run / "split.json").read_text())["test"]
    assert [a["id"] for a in answers] == test_ids and {"em", "f1", "rouge_l", "prediction"} <= set(answers[0])
    assert staged_matches(artifacts["predictions"], run) == {"eval_predictions.jsonl": True}

    res = run_cli("eval", str(run), "--track")
    assert res.exit_code == 0, res.output
    runs = glob.glob(str(run / "wandb" / "offline-run-*" / f"run-{note['id']}.wandb"))
    assert len(runs) == 2  # the evaluation resumed the training's run (same id), offline
    evaluated = [a for a in artifacts_of(run) if a.name.endswith("eval-eval")]
    assert len(evaluated) == 1 and evaluated[0].type == "predictions"
    assert staged_matches(evaluated[0], run / "eval") == {"predictions.jsonl": True, "summary.json": True}
    summary = [
        r.summary for r in wandb_offline_records(Path(sorted(runs)[-1])) if r.WhichOneof("record_type") == "summary"
    ]
    keys = {u.key for s in summary for u in s.update}
    assert {"final_eval/exact_match", "final_eval/f1", "final_eval/rouge_l"} <= keys


def test_eval_track_without_a_tracked_run_is_one_line(two_adapters):
    res = run_cli("eval", str(two_adapters["answers"]), "--track", "--limit", "1")  # trained with report_to=none
    assert res.exit_code != 0 and "no tracker run" in res.stderr and "Traceback" not in res.output


def test_training_and_eval_log_their_files_as_mlflow_run_artifacts(nodrop_model_dir, squad_rows, tmp_path, monkeypatch):
    """With track.report_to=mlflow the same files land in the run's MLflow file store (mlruns/ in
    the run directory), read back with MLflow's own client: the adapter under model/, the data
    report under dataset/, the answers under predictions/, and `eval --track` adds its figures
    and answers to the same run."""
    mlflow = pytest.importorskip("mlflow", reason="the tracking extra (mlflow) is not installed")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # MLflow 3 refuses its file store without it
    run = train_memoriser(
        nodrop_model_dir, squad_rows[:10], tmp_path, steps=4, sets=("track.report_to=mlflow", "train.eval_steps=2")
    ).run_dir
    note = json.loads((run / "tracking.json").read_text())
    assert note["report_to"] == "mlflow" and note["tracking_uri"] == (run / "mlruns").resolve().as_uri()
    client = mlflow.tracking.MlflowClient(note["tracking_uri"])

    def files(folder: str) -> dict[str, bytes]:
        local = Path(client.download_artifacts(note["id"], folder, str(tmp_path / "down" / folder)))
        return {str(p.relative_to(local)): p.read_bytes() for p in local.rglob("*") if p.is_file()}

    model = files("model")
    assert {"adapter_model.safetensors", "adapter_config.json", "loraqa_config.yaml", "loraqa_domain.json"} <= set(
        model
    )
    assert all(model[name] == (run / "adapter" / name).read_bytes() for name in model)
    assert files("dataset") == {n: (run / n).read_bytes() for n in ("data_report.json", "split.json", "config.yaml")}
    assert files("predictions") == {"eval_predictions.jsonl": (run / "eval_predictions.jsonl").read_bytes()}

    res = run_cli("eval", str(run), "--track")
    assert res.exit_code == 0, res.output
    logged = client.get_run(note["id"]).data.metrics
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert logged["final_eval.exact_match"] == summary["exact_match"] and "final_eval.rouge_l" in logged
    answers = files("predictions")
    assert answers["predictions.jsonl"] == (run / "eval" / "predictions.jsonl").read_bytes()
