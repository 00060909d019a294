"""Passage vectors in the SQLite store: a plain table, searched exactly with NumPy.

A vector is stored beside its passage (`vectors`: the passage's rowid, float16 bytes), written in
the same transaction as the passage, so a killed add never leaves a passage without its vector.
A search loads every vector of the collection once into one float32 matrix and takes the best by
one matrix product (exact, no index that could cost recall); the matrix is loaded again only
after a write changed the vectors (a version number kept in `settings`).

Why not sqlite-vec: this machine's Python (like some others) cannot load SQLite extensions, and
measured at 100,000 x 384 its exact float search took 76/84 ms p50/p95, against a few ms for one
matrix product here. The cost is memory: 1.5 kB a passage at 384 dimensions (150 MB at 100,000
passages) in each process that searches densely.
"""

from __future__ import annotations

import json
import sqlite3
import threading

import numpy as np

from loraqa.errors import UsageError

VECTOR_SCHEMA = "CREATE TABLE IF NOT EXISTS vectors (passage_id INTEGER PRIMARY KEY, vector BLOB NOT NULL);"
EMBEDDER_KEY, VERSION_KEY = "embedder", "vectors_version"


def to_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float16).tobytes()


class VectorIndex:
    """One collection's vectors in memory, reloaded when the stored version moves on."""

    def __init__(self):
        self.version: int | None = None
        self.ids = np.zeros(0, dtype=np.int64)
        self.matrix = np.zeros((0, 0), dtype=np.float32)
        self.lock = threading.Lock()

    def current(self, conn: sqlite3.Connection, dim: int) -> tuple[np.ndarray, np.ndarray]:
        version = stored_version(conn)
        with self.lock:
            if version != self.version:
                rows = conn.execute("SELECT passage_id, vector FROM vectors ORDER BY passage_id").fetchall()
                self.ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16)
                self.matrix = (
                    matrix.reshape(len(rows), dim).astype(np.float32) if rows else np.zeros((0, dim), dtype=np.float32)
                )
                self.version = version
            return self.ids, self.matrix


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
    """In the caller's transaction: record the embedder; a different model (another fingerprint)
    deletes every vector."""
    current = embedder_info(conn)
    if current == info or (current and info and current["fingerprint"] == info["fingerprint"]):
        return
    conn.execute("DELETE FROM vectors")
    if info is None:
        conn.execute("DELETE FROM settings WHERE key = ?", (EMBEDDER_KEY,))
    else:
        conn.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (EMBEDDER_KEY, json.dumps(info)))
    bump(conn)


def write(conn: sqlite3.Connection, passage_ids: list[int], vectors, dim: int) -> None:
    """In the caller's transaction: one vector per passage."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape != (len(passage_ids), dim):
        raise UsageError(
            f"{vectors.shape[0] if vectors.ndim else 0} vectors of {vectors.shape[-1] if vectors.ndim > 1 else 0} "
            f"dimensions for {len(passage_ids)} passages of a {dim}-dimension collection"
        )
    conn.executemany(
        "INSERT OR REPLACE INTO vectors VALUES (?, ?)", [(int(pid), to_blob(v)) for pid, v in zip(passage_ids, vectors)]
    )
    bump(conn)


def best(
    ids: np.ndarray, matrix: np.ndarray, vector, k: int, allowed: set[int] | None = None
) -> list[tuple[int, float]]:
    """(passage id, cosine) of the k nearest vectors, best first (allowed: only these ids)."""
    if not len(ids):
        return []
    query = np.asarray(vector, dtype=np.float32).reshape(-1)
    if allowed is not None:
        keep = np.isin(ids, np.fromiter(allowed, dtype=np.int64, count=len(allowed)))
        ids, matrix = ids[keep], matrix[keep]
        if not len(ids):
            return []
    scores = matrix @ query
    k = min(k, len(ids))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(int(ids[i]), float(scores[i])) for i in top]
