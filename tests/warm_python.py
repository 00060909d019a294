"""Run benchmark scripts as `python script.py ARGS` would, minus the imports each one repeats.

Every benchmark script imports PyTorch, transformers and loraqa before its first line of work:
4-5 s of a smoke run that does seconds of work, paid once per script. A warm interpreter imports
them once and forks a child per script; the child runs the script file as `__main__`, with its
own argv, working directory, sys.path and output files, and exits with the script's exit code,
as a fresh interpreter would. Nothing in the warm parent runs a model (PyTorch's and OpenMP's
thread pools are created on first use, so a fork before any use is safe), and nothing of a run
outlives its child. (pytest-forked and pytest-xdist fork or spawn test workers, not commands; no
library forks a pre-imported interpreter per command.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# What the scripts import before their first line of work: the warm parent imports it once.
WARM_IMPORTS = """
import numpy, httpx, torch, peft, transformers
from transformers import AutoTokenizer, T5ForConditionalGeneration, Seq2SeqTrainer, DataCollatorForSeq2Seq
import loraqa.cli
from loraqa.inference.answerer import Answerer
from loraqa.training.train import train
"""

# The warm parent: imports, says ready, then for each request line forks a child that runs one
# script and reports its pid, then its exit code.
PARENT = r"""
import json, os, runpy, sys, traceback
# replies on the original stdout; whatever an import prints goes to stderr
replies = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
exec(WARM_IMPORTS)
print(json.dumps({"ready": True}), file=replies, flush=True)
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            replies.close()
            os.chdir(job["cwd"])
            os.environ.clear()
            os.environ.update(job["env"])
            for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
                target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(target, fd)
                os.close(target)
            stdin = os.open(os.devnull, os.O_RDONLY)
            os.dup2(stdin, 0)
            sys.argv = [job["script"], *job["args"]]
            sys.path[0] = os.path.dirname(job["script"])  # as for `python script.py` (-c put "" there)
            try:
                runpy.run_path(job["script"], run_name="__main__")
                code = 0
            except SystemExit as exc:
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:
                    print(exc.code, file=sys.stderr)
            except BaseException:
                traceback.print_exc()
        finally:
            try:
                import atexit
                atexit._run_exitfuncs()
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    print(json.dumps({"pid": pid}), file=replies, flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), file=replies, flush=True)
"""


class WarmPython:
    """`warm.run(script, args, ...)` -> subprocess.CompletedProcess; the warm interpreter starts
    on the first run and stops at `close()` (or at the end of a `with` block)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> WarmPython:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        code = f"WARM_IMPORTS = {WARM_IMPORTS!r}\n{PARENT}"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert json.loads(self._line(120)) == {"ready": True}

    def close(self) -> None:
        if self.proc is not None:
            proc, self.proc = self.proc, None
            proc.stdin.close()  # type: ignore[union-attr]
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def _line(self, timeout: float) -> str:
        import select

        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the warm interpreter exited")
        return line

    def run(
        self, script: Path, args: list[str], cwd: Path, env: dict[str, str], out_dir: Path, timeout: float
    ) -> subprocess.CompletedProcess:
        if self.proc is None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        stdout, stderr = out_dir / f"{script.stem}.stdout", out_dir / f"{script.stem}.stderr"
        job = {
            "script": str(script),
            "args": args,
            "cwd": str(cwd),
            "env": env,
            "stdout": str(stdout),
            "stderr": str(stderr),
        }
        started = time.monotonic()
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        pid = json.loads(self._line(30))["pid"]
        try:
            code = json.loads(self._line(max(1.0, timeout - (time.monotonic() - started))))["code"]
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            self._line(30)  # the parent reaps it
            raise subprocess.TimeoutExpired([str(script), *args], timeout) from None
        return subprocess.CompletedProcess(
            [str(script), *args], code, stdout.read_text(errors="replace"), stderr.read_text(errors="replace")
        )
