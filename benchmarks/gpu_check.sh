#!/usr/bin/env bash
# The GPU path, measured, on a machine with a CUDA GPU (about 5-8 minutes):
#   1. the CUDA tests (training on the GPU, 8-bit and 4-bit bases for 20 steps, CTranslate2 on CUDA)
#   2. `loraqa bench` for the seed, default and base presets: examples/s, MFU against a matmul
#      peak measured there, peak allocated memory; the base preset's peak must stay under 4 GB
#   3. 8-bit and 4-bit loading, 20 training steps each, through `loraqa bench`
#   4. the CTranslate2 engine on CUDA against the PyTorch engine (eval_speed.py's rows)
# Random weights with the published architectures (no download). Figures go to $OUT (default
# gpu-check/): one JSON per run and summary.txt, which is what the README quotes.
#
#   benchmarks/gpu_check.sh            # uses .venv/bin/python if present, else python3
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
mkdir -p "$OUT"
export WANDB_MODE=offline HF_HUB_OFFLINE=1
status=0
step() { echo; echo "== $*"; }

"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
  echo "no CUDA GPU visible to torch ($("$PY" -c 'import torch; print(torch.__version__)' 2>&1)); nothing to check"; exit 2; }
"$PY" -c "import loraqa" 2>/dev/null || "$PY" -m pip install --quiet --no-deps -e . || exit 2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

step "CUDA tests"
timeout 240 "$PY" -m pytest -q -rs tests/test_cuda.py 2>&1 | tail -15 | tee "$OUT/tests.txt" || status=1

bench() {  # name, then loraqa bench arguments
  local name=$1; shift
  step "bench $name"
  timeout 150 "$PY" -m loraqa bench --steps 20 --json "$OUT/$name.json" --set track.report_to=none "$@" \
    > "$OUT/$name.txt" 2>&1 || { echo "FAILED: $name"; tail -5 "$OUT/$name.txt"; status=1; }
}
bench seed --random-init flan-t5-small --preset seed --no-generation
bench default --random-init flan-t5-small --preset default
bench base --random-init flan-t5-base --preset base --no-generation
bench default-8bit --random-init flan-t5-small --preset default --set model.quantization=8bit --no-generation
bench default-4bit --random-init flan-t5-small --preset default --set model.quantization=4bit --no-generation

step "CTranslate2 on CUDA vs the PyTorch engine"
timeout 180 "$PY" benchmarks/eval_speed.py --device cuda --json "$OUT/eval_speed.json" 2>&1 | tail -8 \
  | tee "$OUT/eval_speed.txt" || status=1

step "summary"
"$PY" - "$OUT" <<'PY' | tee "$OUT/summary.txt"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print(f"GPU: {(out / 'gpu.txt').read_text().strip()}")
print(f"{'run':14s} {'examples/s':>10s} {'MFU':>6s} {'peak GiB':>9s} {'dtype':>6s}")
for name in ("seed", "default", "base", "default-8bit", "default-4bit"):
    path = out / f"{name}.json"
    if not path.is_file():
        print(f"{name:14s} failed (see {name}.txt)")
        continue
    r = json.loads(path.read_text())
    print(f"{name:14s} {r['examples_per_s']:10.2f} {r['mfu']:6.1%} {r['peak_memory_gb']:9.2f} {r['dtype']:>6s}")
base = out / "base.json"
if base.is_file():
    peak = json.loads(base.read_text())["peak_memory_gb"]
    print(f"base preset peak allocated {peak:.2f} GiB: {'under' if peak < 4 else 'NOT under'} 4 GB")
speed = out / "eval_speed.json"
if speed.is_file():
    s = json.loads(speed.read_text())
    print(f"answers/s: PyTorch {s['loraqa_answers_per_s']} ({s['loraqa_dtype']}), CTranslate2 {s['ctranslate2_answers_per_s']}")
PY
exit $status
