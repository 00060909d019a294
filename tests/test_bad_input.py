"""Bad input gets one clear line, a non-zero exit, no traceback, and no run directory.

Catalogue (each case below is one user mistake):
  unknown preset · unknown key · wrong type · several problems at once · missing data file ·
  malformed data file · data with no usable rows · model path that does not exist ·
  model that is not seq2seq · target modules the model lacks · fp16 with T5 ·
  quantization without CUDA · existing run directory · hub unreachable for a model name ·
  --resume with nothing to resume · tracker package missing
"""

from __future__ import annotations

import json

import pytest

from conftest import SQUAD_V1
from helpers import FAST, run_cli


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    from transformers import BertConfig

    d = tmp_path_factory.mktemp("bert")
    BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=32).save_pretrained(d)
    return d


def _cases(tiny, bert, tmp):
    bad_json = tmp / "bad.json"
    bad_json.write_text("{oops")
    unusable = tmp / "unusable.jsonl"
    unusable.write_text(json.dumps({"question": "Q?", "context": "abc", "answer": "zzz"}) + "\n")
    data = ["--data", str(SQUAD_V1)]
    model = ["--model", str(tiny)]
    return {
        "unknown preset": (["--preset", "defualt", *model, *data], "unknown preset 'defualt' (did you mean 'default'?)"),
        "unknown key": ([*model, *data, "--set", "lora.rank=4"], "unknown key 'lora.rank'"),
        "wrong type": ([*model, *data, "--set", "train.epochs=many"], "train.epochs must be a number"),
        "missing data": ([*model, "--data", str(tmp / "nope.json")], "data file not found"),
        "malformed data": ([*model, "--data", str(bad_json)], "is not a readable JSON file"),
        "no usable rows": ([*model, "--data", str(unusable)], "has no usable rows"),
        "missing model": (["--model", str(tmp / "no-model"), *data], "model path not found"),
        "not seq2seq": (["--model", str(bert), *data], "not an encoder-decoder (seq2seq) model"),
        "target modules": ([*model, *data, "--set", "lora.target_modules=[q,query]"],
                           "lora.target_modules ['query'] not found in this model; its linear layers are:"),
        "fp16 with T5": ([*model, *data, "--set", "model.dtype=fp16"], "model.dtype=fp16 is refused for t5"),
        "quantization without CUDA": ([*model, *data, "--set", "model.quantization=8bit"], "needs a CUDA GPU"),
        "hub unreachable": (["--model", "google/flan-t5-small", *data],
                            "Hugging Face Hub is unreachable and the model is not in the local cache; pass a local model directory with --model PATH"),
    }


CASE_NAMES = ["unknown preset", "unknown key", "wrong type", "missing data", "malformed data", "no usable rows",
              "missing model", "not seq2seq", "target modules", "fp16 with T5", "quantization without CUDA",
              "hub unreachable"]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_gives_one_clear_line(case, tiny_model_dir, bert_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from loraqa import hub

    hub.hub_reachable.cache_clear()
    args, message = _cases(tiny_model_dir, bert_dir, tmp_path)[case]
    out = tmp_path / "run"
    res = run_cli("train", *args, "--output", str(out), *FAST)
    assert res.exit_code == 1, res.output
    assert message in res.stderr, res.stderr
    assert "Traceback" not in res.output
    error_lines = [l for l in res.stderr.splitlines() if l.startswith("error:")]
    assert len(error_lines) == 1
    assert not out.exists(), "a failed start must not leave a run directory"


def test_several_config_problems_are_listed_together(tiny_model_dir, tmp_path):
    res = run_cli("train", "--model", str(tiny_model_dir), "--data", str(SQUAD_V1), "--output", str(tmp_path / "r"),
                  "--set", "lora.r=0", "--set", "train.batch_size=-1")
    assert res.exit_code == 1
    errors = [l for l in res.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 2 and "lora.r" in errors[0] and "train.batch_size" in errors[1]


def test_existing_run_directory_is_not_overwritten(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    res = run_cli("train", "--model", str(tiny_model_dir), "--data", str(SQUAD_V1), "--output", str(out), *FAST)
    assert res.exit_code == 1 and "already exists and is not empty; pass --overwrite" in res.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_resume_without_checkpoints_is_explained(tiny_model_dir, tmp_path):
    res = run_cli("train", "--model", str(tiny_model_dir), "--data", str(SQUAD_V1), "--output",
                  str(tmp_path / "none"), "--resume", *FAST)
    assert res.exit_code == 1 and "nothing to resume" in res.stderr


def test_missing_tracker_package_is_caught_before_compute(tiny_model_dir, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    out = tmp_path / "run"
    res = run_cli("train", "--model", str(tiny_model_dir), "--data", str(SQUAD_V1), "--output", str(out),
                  "--set", "track.report_to=mlflow")
    assert res.exit_code == 1 and "needs the 'mlflow' package" in res.stderr and not out.exists()


def test_usage_errors_exit_2():
    res = run_cli("train", "--no-such-option")
    assert res.exit_code == 2
