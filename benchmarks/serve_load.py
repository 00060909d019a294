"""Load check: 200 concurrent requests over two adapters against `loraqa serve` on loopback,
with batching on and off. Prints requests/s for each and fails loudly if any request fails.

Model: the flan-t5-small architecture with random weights (same cost per token as the real
checkpoint) and two LoRA adapters (q, v; r=8) built on it; SQuAD-like passages.

    .venv/bin/python benchmarks/serve_load.py [--requests 200] [--concurrency 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build(work: Path) -> dict[str, Path]:
    from peft import LoraConfig, TaskType, get_peft_model

    from loraqa.config import dump_config, load_config
    from loraqa.data.loading import load_rows
    from loraqa.diagnostics.synthetic import build_t5, train_tokenizer

    rows = load_rows(str(Path(__file__).parents[1] / "tests" / "fixtures" / "squad_v1_mini.json"))
    tok = train_tokenizer([r["context"] + " " + r["question"] for r in rows] + ["Read this and answer the question."], 600)
    base = work / "base"
    model = build_t5("flan-t5-small", dropout=0.0)
    model.save_pretrained(base)
    tok.save_pretrained(base)
    adapters = {}
    for i, name in enumerate(("clinical", "policy")):
        from transformers import AutoModelForSeq2SeqLM

        m = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(base),
                           LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=8, lora_alpha=16, target_modules=["q", "v"],
                                      init_lora_weights=False))
        out = work / name
        m.save_pretrained(out)
        tok.save_pretrained(out)
        cfg = load_config("default", sets=["eval.max_new_tokens=16"], overrides={"model": {"name": str(base)}})
        (out / "loraqa_config.yaml").write_text(dump_config(cfg))
        adapters[name] = out
    return adapters, rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def fire(url: str, rows, n: int, concurrency: int) -> tuple[float, int, list[float]]:
    import httpx

    sem = asyncio.Semaphore(concurrency)
    failures = 0
    latencies = []

    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=concurrency)) as c:
        async def one(i):
            nonlocal failures
            r = rows[i % len(rows)]
            async with sem:
                t = time.perf_counter()
                res = await c.post("/v1/answer", json={"question": r["question"], "context": r["context"],
                                                       "adapter": ("clinical", "policy")[i % 2]})
                latencies.append(time.perf_counter() - t)
                failures += res.status_code != 200

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return n / (time.perf_counter() - start), failures, latencies


def run(adapters, rows, n, concurrency, max_batch) -> dict:
    port = free_port()
    cmd = [sys.executable, "-m", "loraqa", "serve", "--port", str(port), "--max-batch", str(max_batch),
           *[a for name, path in adapters.items() for a in ("--adapter", f"{name}={path}")]]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        import httpx

        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise SystemExit(f"server did not start: {proc.stderr.read()}")
        asyncio.run(fire(f"http://127.0.0.1:{port}", rows, 8, 8))  # warm-up
        rps, failures, lat = asyncio.run(fire(f"http://127.0.0.1:{port}", rows, n, concurrency))
        batches = httpx.get(f"http://127.0.0.1:{port}/health").json()["batches"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    lat.sort()
    return {"max_batch": max_batch, "requests_per_s": round(rps, 2), "failures": failures, "model_calls": batches,
            "p50_s": round(lat[len(lat) // 2], 2), "p95_s": round(lat[int(len(lat) * 0.95)], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="loraqa-load-"))
    adapters, rows = build(work)
    results = [run(adapters, rows, args.requests, args.concurrency, mb) for mb in (32, 1)]
    print(f"{args.requests} concurrent requests over 2 adapters, flan-t5-small architecture, 16-token answers")
    print(f"{'server':28s} {'req/s':>7s} {'failed':>7s} {'model calls':>12s} {'p50 s':>7s} {'p95 s':>7s}")
    for r, label in zip(results, ("batching (max 32, 10 ms)", "batching off (max 1)")):
        print(f"{label:28s} {r['requests_per_s']:7.2f} {r['failures']:7d} {r['model_calls']:12d} {r['p50_s']:7.2f} {r['p95_s']:7.2f}")
    print(f"batching speed-up: {results[0]['requests_per_s'] / results[1]['requests_per_s']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if any(r["failures"] for r in results):
        raise SystemExit("some requests failed")


if __name__ == "__main__":
    main()
