"""Many-adapter check: 200 adapters of the flan-t5-small architecture in an adapter root, Zipf-
distributed traffic (exponent 1.1) from 32 concurrent clients against `loraqa serve
--adapter-root ROOT --max-loaded 8`, on loopback.

Prints: failures (goal 0); loads per 1,000 requests and the on-demand load time (Prometheus);
p50/p95 latency of requests to adapters already loaded against the same traffic on a server
with one adapter (goal <= 1.2x); peak RSS against a server with 8 adapters loaded at start that
answers the same kind of traffic over its 8 (goal <= 1.2x); and each engine's cold start (process
start to the first answer of `loraqa predict`, PyTorch and CTranslate2).

Weights are random (same cost per token as the real checkpoint); every adapter is a LoRA q,v
r=8 with weights of its own.

    .venv/bin/python benchmarks/many_adapters.py [--quick] [--requests 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from commands import loraqa_here
from serve_load import build, free_port, launch, wait_until_up


def adapter_root(work: Path, n: int, arch: str) -> tuple[Path, Path, list[dict]]:
    """(the root with n adapters, the base, question rows): one adapter trained by nobody, its
    weights redrawn for each copy (same shapes, so the same cost to load and run)."""
    import torch
    from safetensors.torch import load_file, save_file

    adapters, rows = build(work, arch)
    first = adapters["clinical"]
    base = work / "base"
    root = work / "root"
    root.mkdir()
    weights = load_file(str(first / "adapter_model.safetensors"))
    for i in range(n):
        folder = root / f"a{i:03d}"
        shutil.copytree(first, folder)
        torch.manual_seed(i)
        save_file(
            {k: torch.randn_like(v) * 0.02 for k, v in weights.items()}, str(folder / "adapter_model.safetensors")
        )
    return root, base, rows


def zipf_names(n_adapters: int, n: int, exponent: float, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, n_adapters + 1)
    p = ranks**-exponent
    p /= p.sum()
    order = rng.permutation(n_adapters)  # which adapter is popular is arbitrary
    return [f"a{order[k]:03d}" for k in rng.choice(n_adapters, size=n, p=p)]


async def fire(url: str, rows, names: list[str], concurrency: int) -> tuple[int, list[float]]:
    import httpx

    sem = asyncio.Semaphore(concurrency)
    failures, latencies = 0, []
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=concurrency)) as c:

        async def one(i, name):
            nonlocal failures
            r = rows[i % len(rows)]
            async with sem:
                t = time.perf_counter()
                res = await c.post(
                    "/v1/answer", json={"question": r["question"], "context": r["context"], "adapter": name}
                )
                latencies.append(time.perf_counter() - t)
                failures += res.status_code != 200

        await asyncio.gather(*(one(i, name) for i, name in enumerate(names)))
    return failures, latencies


def start(args: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = launch([sys.executable, "-m", "loraqa", "serve", "--port", str(port), *args])
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url, proc, seconds=300)
    return proc, url


def peak_rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) / 1024


def metric(url: str, name: str) -> float:
    import httpx

    text = httpx.get(f"{url}/metrics").text
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def loaded_now(url: str) -> list[str]:
    import httpx

    return [
        a["name"] for a in httpx.get(f"{url}/v1/adapters").json()["adapters"] if a["loaded"] and a["name"] != "base"
    ]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def cold_start(adapter: Path, row: dict, engine: str) -> float:
    """Seconds from process start to the first answer printed by `loraqa predict`."""
    t = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "loraqa",
            "predict",
            "-a",
            str(adapter),
            "--engine",
            engine,
            "--question",
            row["question"],
            "--context",
            row["context"],
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - t


def attach_seconds(root: Path, base: Path, n: int = 5) -> float:
    """The load itself, in this process: read and check an adapter, attach it (what a request
    that misses waits for once a slot is free and the batch running has ended)."""
    from loraqa.inference.answerer import Answerer

    names = sorted(p.name for p in root.iterdir())[: n + 1]
    answerer = Answerer({names[0]: str(root / names[0])}, base_model=str(base))
    took = []
    for name in names[1:]:
        t = time.perf_counter()
        answerer.registry.attach(answerer.registry.prepare(name, root / name))
        took.append(time.perf_counter() - t)
        answerer.registry.unload(name)
    return float(np.median(took))


def main() -> None:
    ap = argparse.ArgumentParser(description="200 adapters behind one server, loaded on demand.")
    ap.add_argument("--quick", action="store_true", help="tiny model, 24 adapters, few requests (a smoke run)")
    ap.add_argument("--adapters", type=int, help="adapters in the root (default 200; --quick 24)")
    ap.add_argument("--requests", type=int, help="requests of the Zipf run (default 1000; --quick 60)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-loaded", type=int, default=8)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    arch = "tiny" if args.quick else "flan-t5-small"
    n_adapters = args.adapters or (24 if args.quick else 200)
    n = args.requests or (60 if args.quick else 1000)
    os.environ.setdefault("WANDB_MODE", "offline")
    work = Path(tempfile.mkdtemp(prefix="loraqa-many-"))
    t0 = time.time()
    root, base, rows = adapter_root(work, n_adapters, arch)
    print(f"{n_adapters} adapters built in {time.time() - t0:.0f} s ({arch})")
    names = zipf_names(n_adapters, n, 1.1)
    hot = len(set(names))

    # the library server: Zipf traffic, then requests to the adapters it holds now
    proc, url = start(["--adapter-root", str(root), "--max-loaded", str(args.max_loaded), "--model", str(base)])
    try:
        t = time.perf_counter()
        failures, lat_zipf = asyncio.run(fire(url, rows, names, args.concurrency))
        zipf_s = time.perf_counter() - t
        loads, evictions = metric(url, "loraqa_adapter_loads_total"), metric(url, "loraqa_adapter_evictions_total")
        load_sum, load_count = (
            metric(url, "loraqa_adapter_load_seconds_sum"),
            metric(url, "loraqa_adapter_load_seconds_count"),
        )
        warm = loaded_now(url)
        warm_names = [warm[i % len(warm)] for i in range(max(n // 4, 64))]
        f2, lat_warm = asyncio.run(fire(url, rows, warm_names, args.concurrency))
        failures += f2
        rss_library = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    # one adapter, the same number of warm requests
    proc, url = start(["-a", f"only={root / 'a000'}"])
    try:
        f3, lat_single = asyncio.run(fire(url, rows, ["only"] * len(warm_names), args.concurrency))
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    # eight adapters loaded at start, traffic over the eight
    eight = [f"a{i:03d}" for i in range(min(args.max_loaded, n_adapters))]
    proc, url = start([a for name in eight for a in ("-a", f"{name}={root / name}")])
    try:
        f4, _ = asyncio.run(fire(url, rows, [eight[i % len(eight)] for i in range(n)], args.concurrency))
        rss_eight = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    # cold starts: process start to the first answer
    export = work / "a000-ct2"
    loraqa_here("export", str(root / "a000"), "--output", str(export))  # preparation, in this process
    cold = {
        engine: cold_start(root / "a000" if engine == "pytorch" else export, rows[0], engine)
        for engine in ("pytorch", "ctranslate2")
    }

    attach_s = attach_seconds(root, base)
    ratio_p50 = pct(lat_warm, 50) / pct(lat_single, 50)
    ratio_p95 = pct(lat_warm, 95) / pct(lat_single, 95)
    ratio_rss = rss_library / rss_eight
    print(
        f"\nZipf run: {n} requests over {hot} of {n_adapters} adapters, {args.concurrency} clients, "
        f"--max-loaded {args.max_loaded}: {n / zipf_s:.1f} requests/s, failures {failures + f3 + f4} (goal 0)"
    )
    print(
        f"loads per 1,000 requests: {1000 * loads / n:.0f} ({loads:.0f} loads, {evictions:.0f} evictions); "
        f"a miss waits {load_sum / max(load_count, 1):.2f} s on average for its adapter (a free slot, the batch "
        f"running, then the load itself: {1000 * attach_s:.0f} ms)"
    )
    print(f"Zipf latency (all requests, loads included): p50 {pct(lat_zipf, 50):.2f} s, p95 {pct(lat_zipf, 95):.2f} s")
    print(
        f"loaded adapters' requests: p50 {pct(lat_warm, 50):.2f} s, p95 {pct(lat_warm, 95):.2f} s; one-adapter "
        f"server: p50 {pct(lat_single, 50):.2f} s, p95 {pct(lat_single, 95):.2f} s -> {ratio_p50:.2f}x / "
        f"{ratio_p95:.2f}x (goal <= 1.2x) {'met' if max(ratio_p50, ratio_p95) <= 1.2 else 'NOT met'}"
    )
    print(
        f"peak RSS: library server {rss_library:.0f} MB, {args.max_loaded} adapters loaded at start "
        f"{rss_eight:.0f} MB -> {ratio_rss:.2f}x (goal <= 1.2x) {'met' if ratio_rss <= 1.2 else 'NOT met'}"
    )
    print(
        f"cold start to the first answer (loraqa predict): PyTorch {cold['pytorch']:.1f} s, "
        f"CTranslate2 {cold['ctranslate2']:.1f} s (goal for CTranslate2 <= 1.5 s) "
        f"{'met' if cold['ctranslate2'] <= 1.5 else 'NOT met'}"
    )
    shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "requests": n,
                    "adapters": n_adapters,
                    "distinct": hot,
                    "failures": failures + f3 + f4,
                    "loads": loads,
                    "evictions": evictions,
                    "load_s": load_sum / max(load_count, 1),
                    "warm_p50": pct(lat_warm, 50),
                    "warm_p95": pct(lat_warm, 95),
                    "single_p50": pct(lat_single, 50),
                    "single_p95": pct(lat_single, 95),
                    "rss_library_mb": rss_library,
                    "rss_eight_mb": rss_eight,
                    "attach_s": attach_s,
                    "zipf_p50": pct(lat_zipf, 50),
                    "zipf_p95": pct(lat_zipf, 95),
                    "requests_per_s": n / zipf_s,
                    "cold_start_s": cold,
                },
                indent=2,
            )
        )
    if failures + f3 + f4:
        raise SystemExit("requests failed")


if __name__ == "__main__":
    main()
