"""The CUDA path. These run where a CUDA GPU is visible (benchmarks/gpu_check.sh runs them on
one); elsewhere each is skipped with its reason in pytest's summary, never passed silently.

What the user would see go wrong: training on the GPU not learning (precision or device
mix-ups), 8-bit/4-bit bases failing to train, or the CTranslate2 engine answering differently
on the GPU than on the CPU."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from helpers import read_jsonl, run_cli, train_memoriser, write_jsonl

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs these on one)"
)


def test_training_on_the_gpu_memorises_and_answers(nodrop_model_dir, squad_rows, tmp_path):
    from loraqa.inference.answerer import Answerer

    rows = squad_rows[:8]
    result = train_memoriser(nodrop_model_dir, rows, tmp_path)
    answerer = Answerer({"a": str(result.run_dir)})
    assert answerer.device.startswith("cuda")
    answers = answerer.answer([{"question": r["question"], "context": r["context"]} for r in rows])
    right = sum(a.answer == r["answers"]["text"][0] for a, r in zip(answers, rows))
    assert right >= len(rows) - 2


@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_quantized_base_trains_twenty_steps(nodrop_model_dir, squad_rows, tmp_path, bits):
    if importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("needs bitsandbytes (pip install 'loraqa[gpu]')")
    from loraqa.config import load_config
    from loraqa.training.train import train

    data = write_jsonl(tmp_path / "d.jsonl", squad_rows)
    cfg = load_config(
        "default",
        sets=[
            "train.max_steps=20",
            "train.eval_steps=0",
            "track.report_to=none",
            f"model.quantization={bits}",
            "train.logging_steps=5",
        ],
        overrides={"model": {"name": str(nodrop_model_dir)}, "data": {"source": str(data)}},
    )
    result = train(cfg, output=str(tmp_path / "run"))
    losses = [r["loss"] for r in read_jsonl(result.run_dir / "metrics.jsonl") if "loss" in r]
    assert losses and all(math.isfinite(loss) for loss in losses)
    assert (result.run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_ctranslate2_on_the_gpu_answers_like_on_the_cpu(two_adapters, tmp_path):
    ctranslate2 = pytest.importorskip("ctranslate2")
    if ctranslate2.get_cuda_device_count() == 0:
        pytest.skip("this CTranslate2 build sees no CUDA device")
    from loraqa.inference.answerer import Answerer

    out = tmp_path / "float32"
    assert run_cli("export", str(two_adapters["answers"]), "--output", str(out), "-q", "float32").exit_code == 0
    requests = [{"question": r["question"], "context": r["context"]} for r in two_adapters["rows"]]
    cpu = Answerer({"x": str(out)}, engine="ctranslate2", device="cpu").answer(requests)
    gpu = Answerer({"x": str(out)}, engine="ctranslate2", device="cuda").answer(requests)
    assert sum(a.answer == b.answer for a, b in zip(cpu, gpu)) >= len(requests) - 1
