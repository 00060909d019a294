"""End-to-end training on a tiny random T5: the run directory, the adapter, learning, resume."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from helpers import SQUAD_V1, read_jsonl, run_cli, write_jsonl


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("runs") / "seedrun"
    res = run_cli(
        "train",
        "--preset",
        "seed",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(SQUAD_V1),
        "--output",
        str(out),
        "--set",
        "train.max_steps=6",
        "--set",
        "train.eval_steps=3",
        "--set",
        "train.save_steps=3",
        "--set",
        "train.logging_steps=2",
    )
    assert res.exit_code == 0, res.output
    return out, res


def test_run_directory_holds_everything_the_user_needs(seed_run):
    out, _ = seed_run
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "data_report.json",
        "env.json",
        "split.json",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "adapter/tokenizer.json",
        "checkpoints/checkpoint-6/adapter_model.safetensors",
        "checkpoints/checkpoint-6/optimizer.pt",
    ):
        assert (out / name).is_file(), name
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["preset"] == "seed" and cfg["train"]["max_steps"] == 6 and cfg["lora"]["target_modules"] == ["q", "v"]
    report = json.loads((out / "data_report.json").read_text())
    assert (report["rows_loaded"], report["train_rows"], report["test_rows"]) == (24, 19, 5)
    env = json.loads((out / "env.json").read_text())
    assert env["parameters"]["trainable"] > 0 and env["dtype"] == "fp32" and env["torch_threads"] >= 1
    # W&B ran offline and kept its files inside the run directory
    assert list((out / "wandb").glob("offline-run-*"))


def test_metrics_file_records_every_log_with_its_step(seed_run):
    out, res = seed_run
    records = read_jsonl(out / "metrics.jsonl")
    losses = [r for r in records if "loss" in r]
    assert [r["step"] for r in losses] == [2, 4, 6]
    evals = [r for r in records if "eval/loss" in r]
    assert [r["step"] for r in evals] == [3, 6]
    for r in evals:  # answer-level metrics beside the loss, as the tracker shows them
        assert 0 <= r["eval/exact_match"] <= 100 and 0 <= r["eval/f1"] <= 100 and 0 <= r["eval/token_accuracy"] <= 1
    best = [r for r in records if "best_checkpoint" in r]
    assert best and best[0]["best_f1"] == max(r["eval/f1"] for r in evals)
    final = [r for r in records if "train_samples_per_second" in r][-1]
    assert final["step"] == 6 and final["train_samples_per_second"] > 0
    assert "trainable parameters" in res.output


def test_adapter_loads_with_plain_peft_and_generates(seed_run, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    out, _ = seed_run
    base = AutoModelForSeq2SeqLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, str(out / "adapter"))
    tok = AutoTokenizer.from_pretrained(str(out / "adapter"))
    ids = model.generate(
        **tok(["Instruction: 'Who created Python?'\n\nResponse:"], return_tensors="pt"),
        max_new_tokens=5,
        do_sample=False,
    )
    assert ids.shape[0] == 1 and ids.shape[1] >= 2
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        tiny_model_dir
    )


@pytest.mark.parametrize("checkpointing", [False, True])
def test_only_lora_weights_change(tiny_model_dir, tmp_path, checkpointing):
    """With gradient checkpointing on a frozen base, LoRA must still receive gradients (peft #80)."""
    from transformers import AutoModelForSeq2SeqLM

    from loraqa.config import load_config
    from loraqa.training.train import train

    before = AutoModelForSeq2SeqLM.from_pretrained(tiny_model_dir).state_dict()
    cfg = load_config(
        "default",
        sets=[
            "train.max_steps=5",
            "track.report_to=none",
            "train.eval_steps=0",
            "train.learning_rate=1e-2",
            "model.dtype=fp32",
            f"train.gradient_checkpointing={str(checkpointing).lower()}",
        ],
        overrides={"model": {"name": str(tiny_model_dir)}, "data": {"source": str(SQUAD_V1)}},
    )
    result = train(cfg, output=str(tmp_path / "run"))
    after = {
        k.replace("base_model.model.", "").replace(".base_layer", ""): v for k, v in result.model.state_dict().items()
    }
    lora = {k: v for k, v in after.items() if "lora_" in k}
    assert lora and any(torch.count_nonzero(v) for k, v in lora.items() if "lora_B" in k)  # B starts at zero
    for name, value in before.items():
        assert torch.equal(after[name], value), f"frozen weight {name} changed"


def test_lora_memorises_eight_examples(two_adapters):
    """Greedy decoding must return the trained answers exactly: catches label shift, masking
    and decode mismatches that a falling loss alone would hide. The adapter is the session's
    'answers' one (250 steps on the fixture's first ten rows), read back from its run folder as
    PEFT's own loader reads it: a save that lost or renamed LoRA weights fails here too."""
    from peft import AutoPeftModelForSeq2SeqLM
    from transformers import AutoTokenizer

    from loraqa.config import load_config
    from loraqa.inference.generation import read_rows

    adapter, rows = two_adapters["answers"] / "adapter", two_adapters["rows"]
    assert len(rows) == 8
    model = AutoPeftModelForSeq2SeqLM.from_pretrained(adapter).eval()
    tok = AutoTokenizer.from_pretrained(adapter)
    cfg = load_config("default", sets=["eval.max_new_tokens=16"])
    answers = [a.answer for a in read_rows(model, tok, rows, cfg.data, cfg.eval)]
    assert answers == [r["answers"]["text"][0] for r in rows]


def test_resume_continues_from_the_last_checkpoint(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    args = [
        "train",
        "--preset",
        "default",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(SQUAD_V1),
        *(
            "--set train.max_steps=6 --set train.save_steps=3 --set train.eval_steps=0 --set train.batch_size=4 "
            "--set track.report_to=none --set model.dtype=fp32"
        ).split(),
    ]
    straight = tmp_path / "straight"
    assert run_cli(*args, "--output", str(straight)).exit_code == 0
    crashed = tmp_path / "crashed"
    shutil.copytree(straight, crashed)
    # as if killed between the checkpoint at step 3 and the end
    shutil.rmtree(crashed / "checkpoints" / "checkpoint-6")
    shutil.rmtree(crashed / "adapter")
    res = run_cli(*args, "--output", str(crashed), "--resume")
    assert res.exit_code == 0, res.output
    assert "resuming" in res.output
    a = load_file(straight / "adapter" / "adapter_model.safetensors")
    b = load_file(crashed / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_tensorboard_tracking_writes_inside_the_run_directory(tiny_model_dir, tmp_path):
    out = tmp_path / "tb"
    res = run_cli(
        "train",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(SQUAD_V1),
        "--output",
        str(out),
        "--set",
        "track.report_to=tensorboard",
        "--set",
        "train.max_steps=2",
        "--set",
        "train.eval_steps=0",
        "--set",
        "train.logging_steps=1",
    )
    assert res.exit_code == 0, res.output
    events = list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent), size_guidance={"tensors": 0}).Reload()
    tags = acc.Tags()
    assert "train/loss" in tags["scalars"]
    assert any("loraqa_config" in t for t in tags["tensors"])  # the resolved config is logged


def test_module_entry_point_shows_help():
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "loraqa", "train", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--resume" in res.stdout and "--set" in res.stdout


def test_gradient_accumulation_reports_and_trains_like_one_big_batch(nodrop_model_dir, squad_rows, tmp_path):
    """batch 2 x accumulation 2 must report (and backpropagate) the loss of batch 4, not twice it.

    T5 accepts **kwargs, so the Trainer assumed it normalises by the tokens of all accumulated
    micro-batches and skipped its own division; T5 ignores that count, so loss and gradient came
    out accumulation-steps times too large (the seed preset accumulates 2)."""
    from helpers import MEMORISE
    from loraqa.config import load_config
    from loraqa.training.train import train

    data = write_jsonl(tmp_path / "data.jsonl", squad_rows[:5])  # 4 train, 1 held out
    losses = {}
    for batch, accum in ((4, 1), (2, 2)):
        cfg = load_config(
            "default",
            sets=[
                *MEMORISE,
                "train.max_steps=1",
                "train.logging_steps=1",
                f"train.batch_size={batch}",
                f"train.grad_accum={accum}",
                "train.group_by_length=false",
            ],
            overrides={"model": {"name": str(nodrop_model_dir)}, "data": {"source": str(data)}},
        )
        out = tmp_path / f"run-{batch}x{accum}"
        train(cfg, output=str(out))
        losses[accum] = next(r["loss"] for r in read_jsonl(out / "metrics.jsonl") if "loss" in r)
    # equal up to mean-of-means vs mean-over-tokens (answers differ in length); the bug was 2x
    assert losses[2] == pytest.approx(losses[1], rel=0.15)
