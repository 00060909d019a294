"""Passage vectors in the SQLite store: a plain table, searched exactly with NumPy.

A passage's vectors (one for each of its parts, passage_parts.py) are stored beside it in one row
(`vectors`: the passage's rowid, its parts' float16 vectors end to end), written in the same
transaction as the passage, so a killed add never leaves a passage without its vectors. A search
loads every vector of the collection once into one float32 matrix and scores them all by one
matrix product, a passage by its best part (exact, no index that could cost recall); the matrix
is loaded again only after a write changed the vectors (a version number kept in `settings`).

Why not sqlite-vec: this machine's Python (like some others) cannot load SQLite extensions, and
measured at 100,000 x 384 its exact float search took 76/84 ms p50/p95, against a few ms for one
matrix product here. The cost is memory: 1.5 kB a vector at 384 dimensions (about 400 MB at
100,000 passages of 2.6 parts) in each process that searches densely.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass

import numpy as np

from loraqa.retrieval.passage_parts import per_passage, same_vectors

VECTOR_SCHEMA = "CREATE TABLE IF NOT EXISTS vectors (passage_id INTEGER PRIMARY KEY, vector BLOB NOT NULL);"
EMBEDDER_KEY, VERSION_KEY = "embedder", "vectors_version"


def to_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float16).tobytes()


@dataclass
class Vectors:
    """A collection's vectors: `matrix` holds every part's vector, the parts of the passage
    `ids[i]` in rows starts[i] up to starts[i + 1] (ids ascending)."""

    ids: np.ndarray
    starts: np.ndarray
    matrix: np.ndarray

    def passage_scores(self, vector) -> np.ndarray:
        """Each passage's cosine with `vector`: its best part's."""
        scores = self.matrix @ np.asarray(vector, dtype=np.float32).reshape(-1)
        return np.maximum.reduceat(scores, self.starts) if len(self.ids) else scores

    def cosines(self, vector, passage_ids: list[int]) -> dict[int, float]:
        """The cosine (best part's) of each of these passages that has vectors."""
        at = np.searchsorted(self.ids, passage_ids)
        found = [(int(pid), int(i)) for pid, i in zip(passage_ids, at) if i < len(self.ids) and self.ids[i] == pid]
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        ends = [int(self.starts[i + 1]) if i + 1 < len(self.starts) else len(self.matrix) for _, i in found]
        return {pid: float((self.matrix[self.starts[i] : end] @ query).max()) for (pid, i), end in zip(found, ends)}


class VectorIndex:
    """One collection's vectors in memory, reloaded when the stored version moves on."""

    def __init__(self):
        self.version: int | None = None
        self.vectors = Vectors(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros((0, 0), np.float32))
        self.lock = threading.Lock()

    def current(self, conn: sqlite3.Connection, dim: int) -> Vectors:
        version = stored_version(conn)
        with self.lock:
            if version != self.version:
                rows = conn.execute("SELECT passage_id, vector FROM vectors ORDER BY passage_id").fetchall()
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                counts = np.fromiter((len(r[1]) // (2 * dim) for r in rows), dtype=np.int64, count=len(rows))
                starts = np.concatenate(([0], np.cumsum(counts)[:-1])) if len(rows) else counts
                matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16)
                self.vectors = Vectors(ids, starts, matrix.reshape(-1, dim).astype(np.float32))
                self.version = version
            return self.vectors


def stored_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (VERSION_KEY,)).fetchone()
    return int(row[0]) if row else 0


def bump(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO settings VALUES (?, '1') ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
        (VERSION_KEY,),
    )


def embedder_info(conn: sqlite3.Connection) -> dict | None:
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (EMBEDDER_KEY,)).fetchone()
    return json.loads(row[0]) if row else None


def set_embedder(conn: sqlite3.Connection, info: dict | None) -> None:
    """In the caller's transaction: record the embedder; a different model or part size deletes
    every vector."""
    current = embedder_info(conn)
    if current == info or same_vectors(current, info):
        return
    conn.execute("DELETE FROM vectors")
    if info is None:
        conn.execute("DELETE FROM settings WHERE key = ?", (EMBEDDER_KEY,))
    else:
        conn.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (EMBEDDER_KEY, json.dumps(info)))
    bump(conn)


def write(conn: sqlite3.Connection, passage_ids: list[int], vectors, dim: int) -> None:
    """In the caller's transaction: each passage's vectors (see passage_parts.per_passage)."""
    own = per_passage(vectors, len(passage_ids), dim)
    conn.executemany(
        "INSERT OR REPLACE INTO vectors VALUES (?, ?)", [(int(pid), to_blob(v)) for pid, v in zip(passage_ids, own)]
    )
    bump(conn)


def best(vectors: Vectors, vector, k: int, allowed: set[int] | None = None) -> list[tuple[int, float]]:
    """(passage id, cosine) of the k nearest passages, best first (allowed: only these ids)."""
    ids = vectors.ids
    if not len(ids):
        return []
    scores = vectors.passage_scores(vector)
    if allowed is not None:
        keep = np.isin(ids, np.fromiter(allowed, dtype=np.int64, count=len(allowed)))
        ids, scores = ids[keep], scores[keep]
        if not len(ids):
            return []
    k = min(k, len(ids))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(int(ids[i]), float(scores[i])) for i in top]
