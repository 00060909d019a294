"""Never lose a run: kill -9 and resume, Ctrl-C, a full disk, and training on 2 processes (DDP)."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import SQUAD_V1, read_jsonl, run_cli

ARGS = [
    "--set",
    "train.max_steps=40",
    "--set",
    "train.save_steps=4",
    "--set",
    "train.eval_steps=0",
    "--set",
    "train.batch_size=4",
    "--set",
    "track.report_to=none",
    "--set",
    "model.dtype=fp32",
    "--set",
    "train.logging_steps=4",
    "--set",
    "train.grad_accum=2",
]
# With accumulation 2 the first checkpoint (step 4) falls in the second epoch: the resumed run
# must draw that epoch's length-grouped order exactly as the uninterrupted run did.


def start_training(model_dir, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loraqa",
            "train",
            "--model",
            str(model_dir),
            "--data",
            str(SQUAD_V1),
            "--output",
            str(out),
            *ARGS,
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for_checkpoint(out: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (out / "checkpoints" / "checkpoint-4" / "trainer_state.json").is_file():
            return
        if proc.poll() is not None:
            pytest.fail(f"training ended before its first checkpoint: {proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("no checkpoint appeared in time")


def adapter_difference(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    x, y = (
        load_file(a / "adapter" / "adapter_model.safetensors"),
        load_file(b / "adapter" / "adapter_model.safetensors"),
    )
    assert x.keys() == y.keys()
    return max((x[k] - y[k]).abs().max().item() for k in x)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("straight") / "run"
    res = run_cli("train", "--model", str(tiny_model_dir), "--data", str(SQUAD_V1), "--output", str(out), *ARGS)
    assert res.exit_code == 0, res.output
    return out


def test_kill_9_then_resume_equals_an_uninterrupted_run(tiny_model_dir, tmp_path, straight_run):
    out = tmp_path / "run"
    proc = start_training(tiny_model_dir, out)
    wait_for_checkpoint(out, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "adapter").exists()  # a killed run leaves no adapter that would load
    res = run_cli("train", "--output", str(out), "--resume")
    assert res.exit_code == 0, res.output
    assert adapter_difference(out, straight_run) < 1e-5


def test_ctrl_c_saves_a_checkpoint_and_prints_the_resume_command(tiny_model_dir, tmp_path, straight_run):
    out = tmp_path / "run"
    proc = start_training(tiny_model_dir, out)
    wait_for_checkpoint(out, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    assert f"Resume with: loraqa train --output {out} --resume" in stderr
    assert "Traceback" not in stderr
    step = int(stderr.split("interrupted at step ")[1].split(";")[0])
    assert (out / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").is_file()
    assert not (out / "adapter").exists()
    res = run_cli("train", "--output", str(out), "--resume")
    assert res.exit_code == 0, res.output
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def test_full_disk_fails_clearly_and_keeps_the_last_good_checkpoint(
    tiny_model_dir, tmp_path, monkeypatch, straight_run
):
    from transformers import Trainer

    real_save = Trainer._save_checkpoint
    calls = []

    def save_until_disk_full(self, model, trial):
        calls.append(self.state.global_step)
        if len(calls) < 2:
            return real_save(self, model, trial)
        partial = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        partial.mkdir(parents=True)
        (partial / "adapter_model.safetensors").write_bytes(b"\0" * 10)  # cut short
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Trainer, "_save_checkpoint", save_until_disk_full)
    out = tmp_path / "run"
    res = run_cli("train", "--model", str(tiny_model_dir), "--data", str(SQUAD_V1), "--output", str(out), *ARGS)
    assert res.exit_code == 1
    assert "the disk filled up" in res.stderr and "last complete checkpoint is checkpoint-4 (kept)" in res.stderr
    assert "Traceback" not in res.output
    assert (out / "checkpoints" / "checkpoint-4" / "trainer_state.json").is_file()
    monkeypatch.setattr(Trainer, "_save_checkpoint", real_save)  # space freed
    res = run_cli("train", "--output", str(out), "--resume")
    assert res.exit_code == 0, res.output
    assert "removed incomplete checkpoint(s) checkpoint-8" in res.stderr
    assert adapter_difference(out, straight_run) < 1e-5


def test_two_process_ddp_writes_one_run(tiny_model_dir, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    out = tmp_path / "ddp"
    res = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "loraqa",
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
            "train.batch_size=4",
            "--set",
            "train.eval_steps=3",
            "--set",
            "train.save_steps=3",
            "--set",
            "train.logging_steps=1",
            "--set",
            "eval.subset=2",
            "--set",
            "track.report_to=none",
            "--set",
            "data.test_size=0.125",
            "--set",
            "train.grad_accum=1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # 2 processes on 2 cores
    assert res.returncode == 0, res.stderr[-3000:]
    records = read_jsonl(out / "metrics.jsonl")
    losses = [r for r in records if "loss" in r]
    assert [r["step"] for r in losses] == [1, 2, 3, 4, 5, 6]  # written once, by rank 0 only
    # 21 training rows, batch 4 on each of 2 ranks: each rank sees its own shard, 3 steps an epoch
    assert losses[2]["epoch"] == pytest.approx(1.0)
    assert res.stderr.count("adapter saved to") == 1
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def test_length_grouped_order_is_fixed_per_epoch_and_changes_between_epochs():
    """A resumed run sees the uninterrupted run's order for its epoch; each epoch still reshuffles."""
    from loraqa.training.trainer import EpochSeededLengthGroupedSampler

    lengths = [(i * 37) % 101 + 5 for i in range(200)]
    sampler = EpochSeededLengthGroupedSampler(lengths, batch_size=8, seed=42)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    fresh = EpochSeededLengthGroupedSampler(lengths, batch_size=8, seed=42)
    fresh.set_epoch(1)
    assert sorted(first) == sorted(second) == list(range(200))
    assert first != second and list(fresh) == second
