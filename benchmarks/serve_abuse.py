"""Abuse check: normal clients against `loraqa serve` on loopback, alone, then beside an attack mix.

Normal clients (two adapters, SQuAD-length questions, the API key) ask in a loop for a bounded
time, first alone (the quiet run), then while attackers, without the admin key, send: 50 MB
chunked bodies, /v1/completions with 20,000 prompts over a 1 MB context, long documents whose
streams they drop midway, bad parameters (a float max_tokens, wrong types, deeply nested JSON,
text/plain bodies), POST/DELETE of adapters, random URLs and unknown adapter names.

Prints, from one run: normal clients' failures (goal 0), their p95 latency against the quiet run
(goal <= 2x), peak server RSS against the quiet run (goal <= +300 MB), the size of /metrics
before and after (goal: flat), and whether /health stayed truthful (200, and the server answered
whenever it said so). Attackers pace themselves (one request at a time each, no flood): a flood
from the same two cores would measure the machine, not the server.

Model: the flan-t5-small architecture with random weights (same cost per token as the real
checkpoint) and two LoRA adapters; `--quick` uses a tiny model for a smoke run.

    .venv/bin/python benchmarks/serve_abuse.py [--seconds 60] [--clients 4] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from serve_load import build, free_port, launch, wait_until_up

KEY, ADMIN = "normal-client-key", "admin-key-the-attackers-lack"


class RssSampler:
    """The server process's resident memory, sampled every 50 ms; peak per phase."""

    def __init__(self, pid: int):
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def rss_mb(self) -> float:
        with open(f"/proc/{self.pid}/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024

    def _run(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.rss_mb())
            except (OSError, StopIteration):
                return
            time.sleep(0.05)

    def reset(self) -> None:
        self.peak = self.rss_mb()


async def normal_clients(url: str, rows, clients: int, seconds: float, health: dict) -> tuple[list[float], int]:
    import httpx

    latencies, failures = [], 0
    stop = time.perf_counter() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=120, headers={"Authorization": f"Bearer {KEY}"}) as c:

        async def client(i: int):
            nonlocal failures
            n = i
            while time.perf_counter() < stop:
                r = rows[n % len(rows)]
                t = time.perf_counter()
                try:
                    res = await c.post(
                        "/v1/answer",
                        json={
                            "question": r["question"],
                            "context": r["context"],
                            "adapter": ("clinical", "policy")[n % 2],
                        },
                    )
                    ok = res.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - t)
                failures += not ok
                n += clients

        async def probe():  # /health must say 200 only while the server answers
            while time.perf_counter() < stop:
                res = await c.get("/health")
                health["checks"] += 1
                health["non_200"] += res.status_code != 200
                await asyncio.sleep(0.5)

        await asyncio.gather(*(client(i) for i in range(clients)), probe())
    return latencies, failures


async def chunked_body(host: str, port: int, megabytes: int = 50) -> None:
    _reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /v1/answer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + KEY.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * 65536
    try:
        for _ in range(megabytes * 16):
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
    except (ConnectionError, OSError):
        pass  # closed by the server after its 413
    writer.close()


ATTACKS = ("chunked", "prompts", "dropped", "bad", "adapters", "urls")


async def attackers(
    url: str, rows, seconds: float, counts: dict, only: tuple[str, ...] = ATTACKS, rate: float = 2.0
) -> None:
    """Each attack kind sends `rate` requests a second (one at a time), for `seconds`."""
    import httpx

    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    stop = time.perf_counter() + seconds
    document = " ".join(r["context"] for r in rows)
    megabyte = (document * (1_000_000 // len(document) + 1))[:1_000_000]
    long_doc = (document * 60)[:150_000]
    auth = {"Authorization": f"Bearer {KEY}"}

    async with httpx.AsyncClient(base_url=url, timeout=120) as c:

        async def loop(name, send):
            while time.perf_counter() < stop:
                started = time.perf_counter()
                try:
                    await send()
                except (httpx.HTTPError, OSError):
                    pass
                counts[name] = counts.get(name, 0) + 1
                await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - started)))

        async def many_prompts():
            await c.post(
                "/v1/completions",
                headers=auth,
                json={"model": "clinical", "prompt": ["Which dose?"] * 20_000, "context": megabyte},
            )

        async def dropped_stream():
            body = {
                "model": "policy",
                "stream": True,
                "context": long_doc,
                "messages": [{"role": "user", "content": rows[0]["question"]}],
            }
            try:
                await asyncio.wait_for(c.post("/v1/chat/completions", headers=auth, json=body), timeout=0.3)
            except asyncio.TimeoutError:
                pass  # the client went away before the answer

        bad_bodies = [
            {
                "json": {
                    "model": "clinical",
                    "max_tokens": 1.5,
                    "max_completion_tokens": 4,
                    "messages": [{"role": "user", "content": "Q?"}],
                },
                "path": "/v1/chat/completions",
            },
            {"json": {"question": 5, "context": ["x"]}, "path": "/v1/answer"},
            {
                "content": b'{"question": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
                "path": "/v1/answer",
                "headers": {"content-type": "application/json"},
            },
            {
                "content": json.dumps({"question": "Q?"}).encode(),
                "path": "/v1/answer",
                "headers": {"content-type": "text/plain"},
            },
            {"json": {"question": "Q?", "adapter": "x" * 40}, "path": "/v1/answer"},
        ]

        turn = iter(range(10**9))

        async def bad_parameters():
            b = bad_bodies[next(turn) % len(bad_bodies)]
            await c.post(
                b["path"],
                headers={**auth, **b.get("headers", {})},
                **{k: v for k, v in b.items() if k in ("json", "content")},
            )

        async def adapter_changes():
            await c.delete("/v1/adapters/clinical", headers=auth)
            await c.post("/v1/adapters", headers=auth, json={"name": "mine", "path": "/etc"})

        async def random_urls():
            await c.get(f"/{random.getrandbits(64):x}/{random.getrandbits(32):x}", headers=auth)
            await c.post(
                "/v1/answer", headers=auth, json={"question": "Q?", "adapter": f"nope{random.getrandbits(32)}"}
            )

        kinds = {
            "chunked": ("50 MB chunked bodies", lambda: chunked_body(host, port)),
            "prompts": ("20,000-prompt completions", many_prompts),
            "dropped": ("streams dropped midway", dropped_stream),
            "bad": ("bad parameters", bad_parameters),
            "adapters": ("adapter POST/DELETE without the admin key", adapter_changes),
            "urls": ("random URLs and adapter names", random_urls),
        }
        await asyncio.gather(*(loop(*kinds[k]) for k in only))


def metrics_size(url: str) -> tuple[int, int]:
    """(series, bytes) of the server's /metrics."""
    import httpx

    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    return sum(1 for line in text.splitlines() if line and not line.startswith("#")), len(text)


def p95(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * 0.95))] if values else float("nan")


def run(args) -> dict:
    import httpx

    work = Path(tempfile.mkdtemp(prefix="loraqa-abuse-"))
    adapters, rows = build(work, "tiny" if args.quick else "flan-t5-small")
    port = free_port()
    env = {**os.environ, "LORAQA_API_KEY": KEY, "LORAQA_ADMIN_KEY": ADMIN}
    cmd = [
        sys.executable,
        "-m",
        "loraqa",
        "serve",
        "--port",
        str(port),
        "--adapter-root",
        str(work),
        *[a for name, path in adapters.items() for a in ("--adapter", f"{name}={path}")],
    ]
    proc = launch(cmd, env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, proc)
        rss = RssSampler(proc.pid)
        asyncio.run(normal_clients(url, rows, args.clients, 2, {"checks": 0, "non_200": 0}))  # warm-up
        health = {"checks": 0, "non_200": 0}
        rss.reset()
        quiet, quiet_failures = asyncio.run(normal_clients(url, rows, args.clients, args.seconds, health))
        quiet_rss, metrics_before = rss.peak, metrics_size(url)
        counts: dict = {}
        sizes = {}

        async def attack():
            async def sample_metrics():  # once every kind of attack has been seen a few times
                await asyncio.sleep(args.seconds / 2)
                sizes["mid"] = await asyncio.to_thread(metrics_size, url)

            results = await asyncio.gather(
                normal_clients(url, rows, args.clients, args.seconds, health),
                attackers(url, rows, args.seconds, counts, tuple(args.only), args.attack_rate),
                sample_metrics(),
            )
            return results[0]

        rss.reset()
        loud, loud_failures = asyncio.run(attack())
        loud_rss, metrics_after = rss.peak, metrics_size(url)
        answered_after = httpx.post(
            f"{url}/v1/answer",
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=120,
            json={"question": rows[0]["question"], "context": rows[0]["context"]},
        )
        final_health = httpx.get(f"{url}/health").status_code
        rss.stop.set()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    truthful = health["non_200"] == 0 and final_health == 200 and answered_after.status_code == 200
    return {
        "model": "tiny" if args.quick else "flan-t5-small",
        "seconds": args.seconds,
        "clients": args.clients,
        "attack_rate": args.attack_rate,
        "quiet": {
            "requests": len(quiet),
            "failures": quiet_failures,
            "p95_s": round(p95(quiet), 3),
            "peak_rss_mb": round(quiet_rss, 1),
        },
        "attack": {
            "requests": len(loud),
            "failures": loud_failures,
            "p95_s": round(p95(loud), 3),
            "peak_rss_mb": round(loud_rss, 1),
            "attacks_sent": counts,
        },
        "p95_ratio": round(p95(loud) / p95(quiet), 2),
        "rss_growth_mb": round(loud_rss - quiet_rss, 1),
        "metrics": {"before": metrics_before, "halfway through the attack": sizes["mid"], "after": metrics_after},
        "health": {"checks": health["checks"], "non_200": health["non_200"], "truthful": truthful},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60, help="length of the quiet run and of the attack run")
    ap.add_argument("--clients", type=int, default=4, help="normal clients asking concurrently")
    ap.add_argument("--quick", action="store_true", help="a tiny model: a smoke run, not a measurement")
    ap.add_argument("--attack-rate", type=float, default=2.0, help="requests a second of each attack kind")
    ap.add_argument("--only", nargs="+", choices=ATTACKS, default=list(ATTACKS), help="attack kinds to send")
    ap.add_argument("--json")
    args = ap.parse_args()
    r = run(args)
    from loraqa.modeling.precision import cpu_precision_note

    q, a = r["quiet"], r["attack"]
    print(
        f"{r['clients']} normal clients over 2 adapters, {r['seconds']:g} s quiet then {r['seconds']:g} s under "
        f"attack, {r['model']} architecture; server precision: {cpu_precision_note()}"
    )
    print(
        f"attacks sent ({r['attack_rate']:g}/s of each kind): "
        + ", ".join(f"{n} {k}" for k, n in a["attacks_sent"].items())
    )
    m = r["metrics"]
    before, mid, after = m["before"], m["halfway through the attack"], m["after"]
    rows = [
        ("normal clients' failures", f"{q['failures']} quiet, {a['failures']} under attack", a["failures"] == 0),
        (
            "normal p95 latency",
            f"{q['p95_s']:.3f} s quiet, {a['p95_s']:.3f} s under attack ({r['p95_ratio']:.2f}x; goal <= 2x)",
            r["p95_ratio"] <= 2,
        ),
        (
            "peak server RSS",
            f"{q['peak_rss_mb']:.0f} MB quiet, {a['peak_rss_mb']:.0f} MB under attack "
            f"({r['rss_growth_mb']:+.0f} MB; goal <= +300)",
            r["rss_growth_mb"] <= 300,
        ),
        (
            "/metrics series",
            f"{before[0]} before, {mid[0]} halfway through the attack, {after[0]} after "
            f"({after[1]} bytes; goal: flat while the attack goes on)",
            after[0] == mid[0],
        ),
        (
            "/health truthful",
            f"{r['health']['checks']} checks, {r['health']['non_200']} not 200; answered after the attack",
            r["health"]["truthful"],
        ),
    ]
    for label, figures, met in rows:
        print(f"{label:26s} {figures}  {'met' if met else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
