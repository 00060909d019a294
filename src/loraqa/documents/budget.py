"""Reading untrusted files within a budget: each file read (and cut into passages) in a worker
process (documents/worker.py) that may take at most `documents.file_memory_mb` of memory and
`documents.file_seconds` of time.

A file that needs more is refused in one line naming the budget it broke, the worker is
replaced, and the next file goes on; the calling process never holds more of a file than the
worker managed to read within its budget. One worker serves every file of a run, so the cost of
starting it (a Python process) is paid once, not per file.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import IO

from loraqa.config.schema import DocumentsConfig
from loraqa.documents.document import Document, DocumentError
from loraqa.documents.passages import Passage, locate
from loraqa.documents.worker import HEADER, encode_frame
from loraqa.errors import LoraqaError

START_SECONDS = 30.0  # for the worker to start (an interpreter and loraqa's document modules)
SLACK_SECONDS = 1.0  # beyond a file's own time: its answer's way back


def pipes(proc: subprocess.Popen) -> tuple[IO[bytes], IO[bytes]]:
    """The worker's stdin and stdout: it is always started with both piped."""
    assert proc.stdin is not None and proc.stdout is not None
    return proc.stdin, proc.stdout


class BudgetedReader:
    """`with BudgetedReader(limits, split=(chars, overlap)) as reader: reader.read(path, name)`."""

    def __init__(self, limits: DocumentsConfig | None = None, split: tuple[int, int] | None = None):
        self.limits, self.split = limits or DocumentsConfig(), split
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> BudgetedReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.proc is not None:
            proc, self.proc = self.proc, None
            stdin, stdout = pipes(proc)
            try:
                stdin.close()
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
            stdout.close()

    def _kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            for pipe in pipes(self.proc):
                pipe.close()
            self.proc = None

    def _worker(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            self._kill()
            try:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "loraqa.documents.worker"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    close_fds=True,
                )
                self._read(
                    self.proc,
                    HEADER.unpack(self._read(self.proc, HEADER.size, time.monotonic() + START_SECONDS))[0],
                    time.monotonic() + START_SECONDS,
                )  # {"ready": true}: its imports are done
            except (OSError, TimeoutError, EOFError) as exc:
                self._kill()
                raise LoraqaError(f"cannot start the process that reads files ({type(exc).__name__})") from None
        return self.proc

    def read(self, path: str | Path, name: str) -> list[tuple[Document, list[Passage] | None]]:
        """The file's documents, each with its passages when split was given; DocumentError
        (one line naming the file) for a file that cannot be read or breaks its budget."""
        proc = self._worker()
        request = {
            "path": str(path),
            "name": name,
            "limits": asdict(self.limits),
            "split": list(self.split) if self.split else None,
        }
        try:
            stdin = pipes(proc)[0]
            stdin.write(encode_frame(request))
            stdin.flush()
        except OSError:
            self._kill()
            raise DocumentError(f"{name}: the process that reads files stopped; try again") from None
        deadline = time.monotonic() + self.limits.file_seconds + SLACK_SECONDS
        try:
            head = self._read(proc, HEADER.size, deadline)
            reply = self._read(proc, HEADER.unpack(head)[0], deadline)
        except TimeoutError:
            self._kill()
            raise DocumentError(
                f"{name}: reading it took longer than {self.limits.file_seconds:g} s (documents.file_seconds)"
            ) from None
        except EOFError:
            code = proc.wait()
            self._kill()
            if code == -signal.SIGXCPU:
                raise DocumentError(
                    f"{name}: reading it took longer than {self.limits.file_seconds:g} s (documents.file_seconds)"
                ) from None
            raise DocumentError(
                f"{name}: reading it needed more than {self.limits.file_memory_mb:g} MB "
                f"(documents.file_memory_mb), or the reader crashed (exit {code})"
            ) from None
        import json

        answer = json.loads(reply.decode("utf-8", "surrogatepass"))
        if answer.get("memory"):
            self._kill()
            raise DocumentError(
                f"{name}: reading it needed more than {self.limits.file_memory_mb:g} MB (documents.file_memory_mb)"
            )
        if "error" in answer:
            raise DocumentError(str(answer["error"]))
        return [self._document(d) for d in answer["documents"]]

    @staticmethod
    def _document(d: dict) -> tuple[Document, list[Passage] | None]:
        doc = Document(
            d["source"],
            d["title"],
            d["text"],
            d["id"],
            d["page_starts"],
            [(at, h) for at, h in d["headings"]],
            d["modified"],
            d["metadata"],
        )
        if d["spans"] is None:
            return doc, None
        page_of, heading_of = locate(doc)
        return doc, [
            Passage(doc.id, i, s, e, doc.text[s:e], page_of(s), heading_of(s)) for i, (s, e) in enumerate(d["spans"])
        ]

    @staticmethod
    def _read(proc: subprocess.Popen, size: int, deadline: float) -> bytes:
        """Exactly `size` bytes of the worker's answer, by the deadline."""
        fd, chunks, got = pipes(proc)[1].fileno(), [], 0
        while got < size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, min(size - got, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)
