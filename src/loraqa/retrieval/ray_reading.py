"""`collection add --ray`: files read, cut and embedded by the workers of a Ray cluster.

Ray Data maps a worker over the files: each worker (an actor, started once) keeps a
BudgetedReader, so every file is read in its own process within the same memory and time budget
as a local add, and the collection's embedder, so its passages leave the worker with their
vectors. The results come back in the files' order and the calling process writes them, a
document per transaction (several where commits are dear, as a local add does), so a killed add
keeps what it committed and a rerun skips the files done. Reading and embedding are what take
the time (13-18 passages a second a core with vectors); writing is not, so one writer suffices.
The files must be at the same path on every node (a shared filesystem), as the embedder's
folder must.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from loraqa.config.schema import DocumentsConfig
from loraqa.documents import DocumentError
from loraqa.documents.budget import BudgetedReader
from loraqa.documents.walk import Found
from loraqa.optional import require
from loraqa.retrieval.embedders import load_embedder
from loraqa.retrieval.passage_parts import embed_passages

FILES_A_CALL = 4  # files a worker takes at a time: enough to amortise a call, few enough to spread a small add


@dataclass
class RayReading:
    """Where and how wide: a cluster's address (None: a local instance) and the workers."""

    address: str | None = None
    workers: int = 2
    cpus_per_worker: float = 1.0


class FileWorker:
    """One Ray Data worker: reads a batch of files within the budget, cuts and embeds them."""

    def __init__(
        self,
        limits: DocumentsConfig | None,
        split: tuple[int, int],
        embedder: tuple[str, str | None, str] | None,
        parts: int | None,
    ):
        self.reader = BudgetedReader(limits, split=split)
        self.model = load_embedder(embedder[0], embedder[1], expect=embedder[2]) if embedder else None
        self.parts = parts

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        results = []
        for path, name in zip(batch["path"], batch["name"], strict=True):
            try:
                documents, error = self.reader.read(str(path), str(name)), None
            except DocumentError as exc:
                documents, error = [], exc.template
            vectors = None
            if self.model is not None and documents:
                cut = [passages or [] for _, passages in documents]  # split= cuts every document
                flat, vectors, at = embed_passages(self.model, [p.text for own in cut for p in own], self.parts), [], 0
                for own in cut:
                    vectors.append(flat[at : at + len(own)])
                    at += len(own)
            results.append(pickle.dumps((documents, vectors, error)))  # Arrow does not hold these objects
        return {"index": batch["index"], "result": results}


def read_on_ray(
    files: list[Found],
    limits: DocumentsConfig | None,
    split: tuple[int, int],
    model,
    engine: str | None,
    parts: int | None,
    on: RayReading,
) -> Iterator[tuple[list, list | None, str | None]]:
    """For each file, in order: its (document, passages) list, each document's passages'
    vectors (None without an embedder) and the line that says why it was skipped (or None)."""
    if not files:
        return
    require("ray", "adding to a collection on Ray (--ray)")
    import ray
    import ray.data

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=on.address, include_dashboard=False, log_to_driver=False)
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # written in the files' order, as a local add writes
        context.enable_progress_bars = False  # the command shows its own, per file written
        embedder = (model.name, engine, model.fingerprint) if model is not None else None
        rows = [{"index": i, "path": str(f.path), "name": f.name} for i, f in enumerate(files)]
        results = ray.data.from_items(rows).map_batches(
            FileWorker,
            fn_constructor_args=(limits, split, embedder, parts),
            batch_size=FILES_A_CALL,
            concurrency=on.workers,
            num_cpus=on.cpus_per_worker,
        )
        for expected, row in enumerate(results.iter_rows()):
            assert row["index"] == expected  # preserve_order: never a file written out of turn
            yield pickle.loads(row["result"])
    finally:
        if started_here:
            ray.shutdown()
