"""What the tests share besides fixtures: fixture paths, running the CLI in-process, JSONL files,
and training a tiny adapter that memorises its rows."""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from typer.testing import CliRunner

from loraqa.cli import app
from loraqa.config import load_config

FIXTURES = Path(__file__).parent / "fixtures"
SQUAD_V1 = FIXTURES / "squad_v1_mini.json"
FAST = ["--set", "track.report_to=none", "--set", "train.logging_steps=2"]


def run_cli(*args: str):
    """Run `loraqa ARGS` in-process; returns the click Result (exit_code, output, stderr)."""
    return CliRunner().invoke(app, list(args), catch_exceptions=True)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


MEMORISE = [
    "train.batch_size=8",
    "train.learning_rate=3e-3",
    "train.lr_scheduler=constant",
    "train.warmup_ratio=0",
    "lora.r=16",
    "lora.alpha=32",
    "lora.dropout=0",
    "data.split_by=random",
    "data.test_size=0.2",
    "data.num_samples=null",
    "train.eval_steps=0",
    "train.save_steps=1000",
    "track.report_to=none",
    "model.dtype=fp32",
    "train.fp32_cpu_micro_batch=null",
]


def train_memoriser(model_dir, rows, workdir: Path, steps: int = 250, sets: tuple[str, ...] = ()):
    """Train a LoRA adapter on `rows` until it repeats their first answers; returns the TrainResult."""
    from loraqa.training.train import train

    data = write_jsonl(workdir / "data.jsonl", rows)
    cfg = load_config(
        "default",
        sets=[f"train.max_steps={steps}", *MEMORISE, *sets],
        overrides={"model": {"name": str(model_dir)}, "data": {"source": str(data)}},
    )
    return train(cfg, output=str(workdir / "run"))


def as_unprivileged(fn):
    """fn() as a user without privileges, and what it returned. As root (which ignores file
    modes) it runs in a forked child that becomes `nobody` first; otherwise it runs here."""
    import os
    import pickle

    if os.geteuid() != 0:
        return fn()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            out = ("ok", fn())
        except BaseException as exc:  # noqa: BLE001 - carried back to the test
            out = ("error", repr(exc))
        with os.fdopen(write, "wb") as f:
            pickle.dump(out, f)
        os._exit(0)
    os.close(write)
    import select
    import signal

    ready, _, _ = select.select([read], [], [], 120)
    if not ready:  # a hung child must not hang the suite
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read)
        raise AssertionError("as an unprivileged user: no answer within 120 s")
    with os.fdopen(read, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    kind, value = pickle.loads(data)
    assert kind == "ok", f"as an unprivileged user: {value}"
    return value


def local_client(app):
    """FastAPI's TestClient as a client on this machine addresses the server (Host 127.0.0.1: the
    server refuses Host names it was not told about)."""
    from fastapi.testclient import TestClient

    return TestClient(app, base_url="http://127.0.0.1")


@contextmanager
def live_server(app):
    """The app served by uvicorn on a free loopback port, for clients that speak real HTTP."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wandb_offline_records(run_file: Path) -> list:
    """The records of an offline W&B run file (run-ID.wandb), read with W&B's own protobuf schema.
    The file is a LevelDB-style log (a 7-byte header, then 32 KiB blocks of records cut into
    FULL/FIRST/MIDDLE/LAST pieces): wandb 0.31 no longer ships a Python reader for it."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = Path(run_file).read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    records, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # the block's tail is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        piece = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = piece if kind in (1, 2) else pending + piece
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return records


class GivenPairs:
    """A question writer whose pairs exist already: synthesise() checks and filters them like
    generated ones, so a test can plant good and corrupt pairs and see which are kept."""

    def __init__(self, drafts, label: str = "given"):
        from loraqa.synth.generators import GeneratorStats

        self.drafts, self.label, self.stats = drafts, label, GeneratorStats()

    def generate(self, passages, progress=None):
        return list(self.drafts)
