"""Each script under benchmarks/ runs from a clone and writes its figures (tiny runs).

The README quotes these scripts' output: if one of them broke, nobody could reproduce the
figures. The real measurements take minutes each and are not run here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str, timeout: int = 420) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res


def test_train_speed_script_prints_every_target_with_a_verdict(tmp_path):
    out = tmp_path / "train.json"
    res = run_script("train_speed.py", "--quick", "--json", str(out))
    figures = json.loads(out.read_text())
    assert set(figures["runs"]) == {"seed-style", "seed", "seed bf16", "default"}
    for run in figures["runs"].values():
        assert run["examples_per_s"] > 0 and 0 < run["mfu"] < 1 and run["peak_memory_gb"] > 0.2
    # the baseline really is the seed's padding: every example costs 64 + 64 tokens
    seed_style = figures["runs"]["seed-style"]
    assert seed_style["gradient_checkpointing"] is True
    assert len(figures["targets"]) == 6
    verdicts = [line for line in res.stdout.splitlines() if line.rstrip().endswith("met") or "NOT met" in line]
    assert len(verdicts) == 6, res.stdout


def test_eval_speed_script_compares_batched_generation_with_the_seed(tmp_path):
    out = tmp_path / "eval.json"
    run_script("eval_speed.py", "--questions", "6", "--new-tokens", "3", "--batch-size", "4", "--json", str(out))
    figures = json.loads(out.read_text())
    assert figures["questions"] == 6 and figures["seed_style_answers_per_s"] > 0 and figures["speedup"] > 0


def test_serve_load_script_answers_every_request(tmp_path):
    out = tmp_path / "serve.json"
    run_script("serve_load.py", "--requests", "12", "--concurrency", "12", "--json", str(out))
    batched, unbatched = json.loads(out.read_text())
    assert batched["failures"] == unbatched["failures"] == 0
    # the same requests (plus warm-up) in fewer model calls when batching is on
    assert batched["model_calls"] < unbatched["model_calls"]
