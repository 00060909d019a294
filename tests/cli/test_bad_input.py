"""Bad input gets one clear line, the right exit code, no traceback, and nothing written.

Exit code 2: the command line or configuration is wrong (usage). Exit code 1: everything else.
The catalogue below is every case, one user mistake each.
"""

from __future__ import annotations

import json
import os

import pytest

from helpers import FAST, FIXTURES, SQUAD_V1, run_cli


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    from transformers import BertConfig

    d = tmp_path_factory.mktemp("bert")
    BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    ).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def pickle_model_dir(tmp_path_factory, tiny_model_dir):
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    d = tmp_path_factory.mktemp("pickled")  # a checkpoint as older tools wrote them: pickle only
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_model_dir)
    model.config.save_pretrained(d)
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(d)
    assert (d / "pytorch_model.bin").is_file()
    return d


@pytest.fixture
def files(tmp_path, tiny_model_dir, bert_dir, pickle_model_dir):
    (tmp_path / "bad.json").write_text("{oops")
    (tmp_path / "unusable.jsonl").write_text(json.dumps({"question": "Q?", "context": "abc", "answer": "zzz"}) + "\n")
    (tmp_path / "columns.csv").write_text("text,label\nhello,1\n")
    (tmp_path / "bad.yaml").write_text("train: [1, 2\n")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("earlier work")
    return {
        "tiny": str(tiny_model_dir),
        "bert": str(bert_dir),
        "pickle": str(pickle_model_dir),
        "tmp": tmp_path,
        "data": str(SQUAD_V1),
    }


# name: (arguments after `loraqa train --output OUT`, expected exit code, message)
TRAIN_CASES = {
    "unknown preset": (["--preset", "defualt"], 2, "unknown preset 'defualt' (did you mean 'default'?)"),
    "unknown key": (["--set", "lora.rank=4"], 2, "unknown key 'lora.rank'"),
    "wrong type": (["--set", "train.epochs=many"], 2, "train.epochs must be a number"),
    "value out of range": (["--set", "data.test_size=1.5"], 2, "data.test_size must be between 0 and 1"),
    "malformed --set": (["--set", "batch_size"], 2, "must look like section.key=value"),
    "missing --config file": (["--config", "{tmp}/nope.yaml"], 2, "config file not found"),
    "--config not YAML": (["--config", "{tmp}/bad.yaml"], 2, "is not valid YAML"),
    "save not a multiple of eval": (
        ["--set", "train.eval_steps=3", "--set", "train.save_steps=4"],
        2,
        "must be a multiple of train.eval_steps",
    ),
    "missing data file": (["--data", "{tmp}/nope.json"], 1, "data file not found"),
    "malformed data file": (["--data", "{tmp}/bad.json"], 1, "is not a readable JSON file"),
    "data without QA columns": (["--data", "{tmp}/columns.csv"], 1, "are not a QA layout"),
    "no usable rows": (["--data", "{tmp}/unusable.jsonl"], 1, "has no usable rows"),
    "missing model path": (["--model", "{tmp}/no-model"], 1, "model path not found"),
    "model not seq2seq": (["--model", "{bert}"], 1, "not an encoder-decoder (seq2seq) model"),
    "target modules the model lacks": (
        ["--set", "lora.target_modules=[q,query]"],
        1,
        "lora.target_modules ['query'] not found in this model; its linear layers are:",
    ),
    "fp16 with T5": (["--set", "model.dtype=fp16"], 1, "model.dtype=fp16 is refused for t5"),
    "quantization without CUDA": (["--set", "model.quantization=8bit"], 1, "needs a CUDA GPU"),
    "hub unreachable": (
        ["--model", "google/flan-t5-small"],
        1,
        "the Hugging Face Hub is unreachable and the model is not in the local cache; "
        "pass a local model directory with --model PATH",
    ),
    "pickle weights": (["--model", "{pickle}"], 1, "holds only pickle weights (pytorch_model.bin)"),
    "resume with nothing to resume": (["--resume"], 1, "nothing to resume"),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_bad_input(case, files, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from loraqa import hub

    hub.hub_reachable.cache_clear()
    args, code, message = TRAIN_CASES[case]
    args = [a.format(**files) for a in args]
    base = ["--model", files["tiny"], "--data", files["data"]]
    out = files["tmp"] / "run"
    res = run_cli("train", *base, *args, "--output", str(out), *FAST)
    assert res.exit_code == code, res.output
    assert message in res.stderr, res.stderr
    assert "Traceback" not in res.output
    assert len([line for line in res.stderr.splitlines() if line.startswith("error:")]) == 1
    assert not out.exists(), "a failed start must not leave a run directory"


def test_several_config_problems_are_listed_together(files):
    res = run_cli(
        "train",
        "--model",
        files["tiny"],
        "--data",
        files["data"],
        "--output",
        str(files["tmp"] / "r"),
        "--set",
        "lora.r=0",
        "--set",
        "train.batch_size=-1",
    )
    assert res.exit_code == 2
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "lora.r" in errors[0] and "train.batch_size" in errors[1]


def test_existing_run_directory_is_left_exactly_as_it_was(files):
    out = files["tmp"] / "existing"
    res = run_cli("train", "--model", files["tiny"], "--data", files["data"], "--output", str(out), *FAST)
    assert res.exit_code == 1 and "already exists and is not empty; pass --overwrite" in res.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "earlier work"


def test_missing_tracker_package_is_caught_before_compute(files, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    out = files["tmp"] / "run"
    res = run_cli(
        "train",
        "--model",
        files["tiny"],
        "--data",
        files["data"],
        "--output",
        str(out),
        "--set",
        "track.report_to=mlflow",
    )
    assert res.exit_code == 1 and "needs the 'mlflow' package" in res.stderr and not out.exists()


def test_pickle_weights_load_when_the_user_opts_in(files):
    out = files["tmp"] / "run"
    res = run_cli(
        "train",
        "--model",
        files["pickle"],
        "--data",
        files["data"],
        "--output",
        str(out),
        "--allow-pickle",
        "--set",
        "train.max_steps=1",
        "--set",
        "train.eval_steps=0",
        *FAST,
    )
    assert res.exit_code == 0, res.output
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["train", "--no-such-option"], 2, "No such option"),
        (["eval", "{tmp}/nowhere"], 1, "does not exist"),
        (["eval", "{tmp}"], 1, "holds no adapter"),
        (["eval", "{tmp}", "--limit", "0"], 2, "Invalid value for '--limit'"),
        (["score", str(FIXTURES / "score_v1.json"), "{tmp}/bad.json"], 1, "is not valid JSON"),
        (["score", "{tmp}/columns.csv", str(FIXTURES / "score_v1_pred.json")], 1, "is not valid JSON"),
        (["report", "{tmp}"], 1, "has no metrics.jsonl"),
    ],
)
def test_other_commands_bad_input(files, args, code, message):
    res = run_cli(*[a.format(**files) for a in args])
    assert res.exit_code == code, res.output
    assert message in res.stderr or message in res.output
    assert "Traceback" not in res.output


# ---------------------------------------------------------------- --overwrite deletes only a run


def _train(files, out, *extra):
    return run_cli(
        "train",
        "--model",
        files["tiny"],
        "--data",
        files["data"],
        "--output",
        str(out),
        *FAST,
        "--set",
        "train.max_steps=1",
        "--set",
        "train.eval_steps=0",
        *extra,
    )


def test_overwrite_never_deletes_the_working_directory(files, monkeypatch):
    work = files["tmp"] / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    res = _train(files, ".", "--overwrite")
    assert res.exit_code == 1 and "working directory" in res.stderr and "Traceback" not in res.output
    assert (work / "notes.txt").read_text() == "mine"


def test_overwrite_never_deletes_the_home_directory(files, monkeypatch):
    home = files["tmp"] / "home"
    home.mkdir()
    (home / ".bashrc").write_text("mine")
    monkeypatch.setenv("HOME", str(home))
    res = _train(files, home, "--overwrite")
    assert res.exit_code == 1 and "home directory" in res.stderr and (home / ".bashrc").read_text() == "mine"


def test_overwrite_refuses_a_folder_that_holds_no_run(files):
    out = files["tmp"] / "existing"  # holds keep.txt only
    res = _train(files, out, "--overwrite")
    assert res.exit_code == 1 and "is not a loraqa run directory" in res.stderr
    assert (out / "keep.txt").read_text() == "earlier work"


def test_overwrite_replaces_an_earlier_run(files):
    out = files["tmp"] / "run"
    assert _train(files, out).exit_code == 0
    (out / "stale.txt").write_text("from before")
    res = _train(files, out, "--overwrite")
    assert res.exit_code == 0, res.output
    assert not (out / "stale.txt").exists() and (out / "adapter" / "adapter_model.safetensors").is_file()


def test_a_training_error_is_the_last_of_a_few_lines_of_loraqa_s_own(tmp_path, tiny_model_dir):
    """What the user reads when a run is refused: loraqa's lines (what it loaded, the error), not
    a library's progress bars or warnings around them. Run as the user runs it, in a process of
    its own with a terminal-less stderr (transformers drew "Loading weights" bars there)."""
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "loraqa", "train", "--model", str(tiny_model_dir), "--data", str(SQUAD_V1)]
        + ["--output", str(tmp_path / "run"), "--set", "lora.target_modules=[query]", *FAST],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    lines = [line for line in res.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert res.returncode == 1 and lines[-1].startswith("error: lora.target_modules ['query'] not found"), res.stderr
    theirs = [line for line in lines if not line.startswith(("error: ", "warning: ", "data: "))]
    assert not theirs and len(lines) <= 4, res.stderr
    assert not (tmp_path / "run").exists()
