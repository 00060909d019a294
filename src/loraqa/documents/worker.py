"""The worker process that reads untrusted files: `python -m loraqa.documents.worker`.

It reads one request at a time from stdin and answers on stdout, each a frame (4-byte length,
then JSON; JSON, not pickle, so that a parser compromised by a hostile file cannot make the
parent run code). While a file is read and cut into passages, the process's address space is
capped at what it held before the file plus the file's memory budget, and its CPU time at the
file's time budget (the parent also kills it at the deadline): a reader that would take more
gets a MemoryError (answered as such, then the worker exits so the next file starts clean) or
dies. Nothing here is trusted by the parent beyond the shape of the answer. The readers are
imported with this module, before the first file's budget starts (its libraries, pypdf,
python-docx, trafilatura, load with the first file of their kind, within that file's budget).
"""

from __future__ import annotations

import json
import os
import struct
import sys
from typing import Any

from loraqa.config.schema import DocumentsConfig
from loraqa.documents.document import DocumentError
from loraqa.documents.formats import read_path
from loraqa.documents.passages import TooManyPassages, passage_spans

HEADER = struct.Struct(">I")


def read_frame(stream) -> dict | None:
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    return json.loads(stream.read(size).decode("utf-8", "surrogatepass"))


def encode_frame(message: dict) -> bytes:
    body = json.dumps(message, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return HEADER.pack(len(body)) + body


def _address_space() -> int:
    """Bytes of address space the process holds now (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


class Budget:
    """The memory and CPU caps around one file (where the platform has them: Linux)."""

    def __init__(self, memory_mb: float, seconds: float):
        self.memory, self.seconds = int(memory_mb * 2**20), seconds
        self.resource: Any = None  # the resource module, where the platform has it

    def __enter__(self):
        try:
            import resource

            self.resource = resource
            self.saved = {r: resource.getrlimit(r) for r in (resource.RLIMIT_AS, resource.RLIMIT_CPU)}
            hard = self.saved[resource.RLIMIT_AS][1]
            cap = _address_space() + self.memory
            resource.setrlimit(resource.RLIMIT_AS, (cap if hard < 0 else min(cap, hard), hard))
            used = resource.getrusage(resource.RUSAGE_SELF)
            cpu = int(used.ru_utime + used.ru_stime + self.seconds) + 2
            cpu_hard = self.saved[resource.RLIMIT_CPU][1]
            resource.setrlimit(resource.RLIMIT_CPU, (cpu if cpu_hard < 0 else min(cpu, cpu_hard), cpu_hard))
        except (ImportError, OSError, ValueError):
            self.resource = None  # no caps here: the parent's deadline still holds
        return self

    def __exit__(self, *exc):
        if self.resource is not None:
            for r, limits in self.saved.items():
                self.resource.setrlimit(r, limits)
        return False


def answer(request: dict) -> dict:
    """Read one file as asked: its documents, each with its passages' spans, or why not."""
    limits = DocumentsConfig(**request["limits"])
    name = request["name"]
    try:
        with Budget(limits.file_memory_mb, limits.file_seconds):
            docs = read_path(request["path"], limits=limits, name=name)
            out = []
            for doc in docs:
                spans = None
                if request.get("split"):
                    chars, overlap = request["split"]
                    spans = list(passage_spans(doc, chars, overlap, limits.max_passages))
                out.append(
                    {
                        "source": doc.source,
                        "title": doc.title,
                        "text": doc.text,
                        "id": doc.id,
                        "page_starts": doc.page_starts,
                        "headings": doc.headings,
                        "modified": doc.modified,
                        "metadata": doc.metadata,
                        "spans": spans,
                    }
                )
            del docs
            return {"frame": encode_frame({"documents": out})}
    except DocumentError as exc:
        return {"error": exc.template}
    except TooManyPassages as exc:
        return {"error": f"{name}: the document {exc} (documents.max_passages)"}
    except MemoryError:
        return {"memory": True}
    except RecursionError:
        return {"error": f"{name}: its content nests too deeply to read"}
    except Exception as exc:  # noqa: BLE001 - a parser failing in a way nobody foresaw: one line, the add goes on
        return {"error": f"{name}: could not be read ({type(exc).__name__})"}


def main() -> None:
    requests, replies = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a library that prints must not write into the frames
    _die_with_parent()
    replies.write(encode_frame({"ready": True}))
    replies.flush()
    while True:
        request = read_frame(requests)
        if request is None:
            return
        result = answer(request)
        frame = result.pop("frame", None) or encode_frame(result)
        out_of_memory = "memory" in result
        del result
        replies.write(frame)
        replies.flush()
        if out_of_memory:
            return  # a MemoryError may leave the interpreter short: the next file gets a fresh worker


def _die_with_parent() -> None:
    """Linux: the worker is killed when the process that started it dies (a killed add must not
    leave a parser running)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    main()
