"""Evaluation under torchrun: two CPU processes share the questions and report what one would.

What the user would see go wrong: every process answering every question (twice the time for
nothing), answers coming back in the wrong order (EM/F1 scored against the wrong references),
or several processes writing the same files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from helpers import SQUAD_V1, read_jsonl, run_cli

SCRIPTS = Path(__file__).parent / "scripts"


def torchrun(*args: str) -> subprocess.CompletedProcess:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(port),
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return res


def test_eval_under_torchrun_splits_the_questions_and_scores_like_one_process(two_adapters, tmp_path):
    run = str(two_adapters["answers"])
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_cli("eval", run, "--data", str(SQUAD_V1), "--output", str(one)).exit_code == 0
    torchrun("-m", "loraqa", "eval", run, "--data", str(SQUAD_V1), "--output", str(two))
    single, shared = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    # each process answered its own half, not all of them
    assert single["questions_per_process"] == [single["total"]]
    assert len(shared["questions_per_process"]) == 2 and sum(shared["questions_per_process"]) == single["total"]
    assert min(shared["questions_per_process"]) >= single["total"] // 2
    for key in ("exact_match", "f1", "total"):
        assert shared[key] == single[key], key
    assert abs(shared["token_accuracy"] - single["token_accuracy"]) < 1e-6
    # the same answer for the same question id, in the same order
    a, b = read_jsonl(one / "predictions.jsonl"), read_jsonl(two / "predictions.jsonl")
    assert [(r["id"], r["prediction"], r["em"]) for r in a] == [(r["id"], r["prediction"], r["em"]) for r in b]
    assert single["exact_match"] > 0  # the memorised adapter really answers: a wrong order would show


def test_training_em_f1_hook_under_torchrun_shares_the_questions(two_adapters, tmp_path):
    run = str(two_adapters["answers"])
    out_one, out_two = tmp_path / "one.json", tmp_path / "two.json"
    subprocess.run(
        [sys.executable, str(SCRIPTS / "answer_metrics_in_shares.py"), run, str(SQUAD_V1), str(out_one)],
        check=True,
        capture_output=True,
        env={**os.environ, "WANDB_MODE": "offline"},
        timeout=300,
    )
    torchrun(str(SCRIPTS / "answer_metrics_in_shares.py"), run, str(SQUAD_V1), str(out_two))
    single, shared = json.loads(out_one.read_text()), json.loads(out_two.read_text())
    total = single["answered_per_process"][0]
    assert sum(shared["answered_per_process"]) == total and min(shared["answered_per_process"]) >= total // 2
    assert shared["metrics"] == single["metrics"]
    assert single["metrics"]["exact_match"] > 0


def test_every_process_ends_its_process_group_before_exit(tmp_path):
    """A gloo group left to interpreter shutdown aborts a finished process now and then (SIGABRT):
    the user's eval or training is written, yet torchrun says it failed. Ended means its threads
    are gone too, also when model classes were first loaded after the group started."""
    torchrun(str(SCRIPTS / "process_group_at_exit.py"), str(tmp_path))
    for rank in (0, 1):
        alive = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert alive["group"] is False, rank
        assert alive["gloo_threads"] in ([], None), (rank, alive)
