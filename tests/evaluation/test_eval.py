"""Evaluation by generated answers: `loraqa eval`, and EM/F1 during training with the best-F1 adapter kept."""

from __future__ import annotations

import json

import pytest

from helpers import FIXTURES, SQUAD_V1, read_jsonl, run_cli


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("evalrun") / "run"
    res = run_cli(
        "train",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(SQUAD_V1),
        "--output",
        str(out),
        "--set",
        "train.max_steps=20",
        "--set",
        "train.learning_rate=3e-3",
        "--set",
        "train.eval_steps=0",
        "--set",
        "track.report_to=none",
        "--set",
        "train.batch_size=8",
    )
    assert res.exit_code == 0, res.output
    return out


def test_eval_writes_predictions_and_summary(trained_run):
    res = run_cli("eval", str(trained_run))
    assert res.exit_code == 0, res.output
    out = trained_run / "eval"
    items = read_jsonl(out / "predictions.jsonl")
    held_out = json.loads((trained_run / "split.json").read_text())["test"]
    assert sorted(i["id"] for i in items) == sorted(held_out)  # default: the run's held-out questions
    assert set(items[0]) >= {"id", "question", "prediction", "references", "em", "f1"}
    official = json.loads((out / "predictions.json").read_text())
    assert official == {i["id"]: i["prediction"] for i in items}
    summary = json.loads((out / "summary.json").read_text())
    for key in ("exact_match", "f1", "total", "token_accuracy", "extractiveness", "seconds", "answers_per_second"):
        assert key in summary
    assert summary["total"] == len(items)
    assert summary["f1"] == pytest.approx(100 * sum(i["f1"] for i in items) / len(items), abs=1e-4)
    assert "exact_match" in res.stdout and "f1" in res.stdout


def test_eval_predictions_score_the_same_with_loraqa_score(trained_run, tmp_path):
    out = tmp_path / "ev"
    assert (
        run_cli("eval", str(trained_run), "--data", str(FIXTURES / "score_v1.json"), "--output", str(out)).exit_code
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    res = run_cli("score", str(FIXTURES / "score_v1.json"), str(out / "predictions.json"))
    scored = json.loads(res.stdout)
    assert scored["exact_match"] == pytest.approx(summary["exact_match"]) and scored["f1"] == pytest.approx(
        summary["f1"]
    )


def test_baseline_compares_adapter_and_base_on_the_same_questions(trained_run, tmp_path):
    out = tmp_path / "ev"
    res = run_cli("eval", str(trained_run), "--baseline", "--limit", "2", "--output", str(out))
    assert res.exit_code == 0, res.output
    assert "base model" in res.stdout and "difference" in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total"] == 2 and summary["baseline"]["total"] == 2
    base_ids = [i["id"] for i in read_jsonl(out / "baseline_predictions.jsonl")]
    assert base_ids == [i["id"] for i in read_jsonl(out / "predictions.jsonl")]


def test_eval_on_a_bare_adapter_folder_uses_its_saved_template(trained_run, tmp_path):
    out = tmp_path / "ev"
    res = run_cli("eval", str(trained_run / "adapter"), "--data", str(SQUAD_V1), "--limit", "3", "--output", str(out))
    assert res.exit_code == 0, res.output
    assert json.loads((out / "summary.json").read_text())["total"] == 3


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p, "does not exist"),
        (lambda p: (p.mkdir(), p)[1], "holds no adapter"),
    ],
)
def test_eval_without_an_adapter_is_explained(tmp_path, make, message):
    target = make(tmp_path / "run")
    res = run_cli("eval", str(target))
    assert res.exit_code == 1 and message in res.stderr and "Traceback" not in res.output


def test_best_f1_checkpoint_becomes_the_final_adapter(tiny_model_dir, tmp_path, monkeypatch):
    """F1 peaks at the second of three evaluations: the adapter must be that checkpoint's,
    not the last one (resuming/reloading LoRA weights has broken in transformers before)."""
    from safetensors.torch import load_file

    from loraqa.training.callbacks import AnswerMetrics

    scripted = iter([10.0, 90.0, 20.0])
    real_call = AnswerMetrics.__call__

    def fake_call(self, eval_pred):
        metrics = real_call(self, eval_pred)
        metrics["f1"] = next(scripted)
        return metrics

    monkeypatch.setattr(AnswerMetrics, "__call__", fake_call)
    out = tmp_path / "best"
    res = run_cli(
        "train",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(SQUAD_V1),
        "--output",
        str(out),
        "--set",
        "train.max_steps=6",
        "--set",
        "train.eval_steps=2",
        "--set",
        "train.save_steps=2",
        "--set",
        "train.save_total_limit=2",
        "--set",
        "train.learning_rate=1e-2",
        "--set",
        "track.report_to=none",
        "--set",
        "eval.subset=2",
    )
    assert res.exit_code == 0, res.output
    assert "best F1 90.00 at checkpoint-4" in res.stderr
    final = load_file(out / "adapter" / "adapter_model.safetensors")
    best = load_file(out / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors")
    last = load_file(out / "checkpoints" / "checkpoint-6" / "adapter_model.safetensors")
    assert all((final[k] == best[k]).all() for k in final)
    assert any((final[k] != last[k]).any() for k in final)


def test_report_draws_the_curves(tiny_model_dir, tmp_path):
    out = tmp_path / "rep"
    res = run_cli(
        "train",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(SQUAD_V1),
        "--output",
        str(out),
        "--set",
        "train.max_steps=4",
        "--set",
        "train.eval_steps=2",
        "--set",
        "train.save_steps=2",
        "--set",
        "train.logging_steps=1",
        "--set",
        "track.report_to=none",
        "--set",
        "eval.subset=2",
    )
    assert res.exit_code == 0, res.output
    res = run_cli("report", str(out))
    assert res.exit_code == 0, res.output
    png = (out / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "best F1" in page
    # after `loraqa eval` the report adds the risk-coverage curve of the answers' scores
    assert run_cli("eval", str(out)).exit_code == 0
    assert run_cli("report", str(out)).exit_code == 0
    assert "most confident answers" in (out / "report.html").read_text()
    assert len((out / "report.png").read_bytes()) > len(png)  # a third panel


def test_report_needs_a_run_directory(tmp_path):
    res = run_cli("report", str(tmp_path))
    assert res.exit_code == 1 and "has no metrics.jsonl" in res.stderr


def test_report_survives_a_torn_last_line(tmp_path):
    """metrics.jsonl is appended to during training; a crash can cut its last line short."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    res = run_cli("report", str(run))
    assert res.exit_code == 0, res.output
    assert (run / "report.png").is_file()
