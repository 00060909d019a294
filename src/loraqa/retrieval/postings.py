"""Exact BM25 over a whole FTS5 table, scored with NumPy from the table's own index.

Why not FTS5's ORDER BY rank: bm25() reads every matching row's position lists and recounts each
word's rows on every scan; at 100,000 real passages a query of common words took 44 ms on average
and far more at the tail, and restricting it to candidates picked by the rarer words lost a tenth of
the exact top five (measured on COVID-QA's questions, benchmarks/domains.py). Here each query
word's rows and in-row counts are read once from FTS5's fts5vocab `instance` view and kept (until a
write changes the table); a query then adds one vector per word, as bm25s does with its
precomputed sparse matrix, and takes the best k. The formula and statistics are FTS5's own
(retrieval/bm25.py): the same scores as bm25(), over every passage.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections import OrderedDict

import numpy as np

from loraqa.retrieval.bm25 import K1, B, index_state, stem, varints


def row_lengths(conn: sqlite3.Connection, table: str) -> np.ndarray:
    """Tokens in each row over all its columns, indexed by rowid (FTS5's docsize records: one
    varint per column)."""
    rows = conn.execute(f"SELECT id, sz FROM {table}_docsize").fetchall()
    if not rows:
        return np.zeros(1, dtype=np.float32)
    # float32 holds every token count exactly (up to 16 million), at 4 bytes a passage
    out = np.zeros(max(r[0] for r in rows) + 1, dtype=np.float32)
    for rowid, blob in rows:
        out[rowid] = sum(varints(blob))
    return out


class Postings:
    """One FTS5 table's query words: their rows and weighted in-row counts, kept for the table's
    current state up to MAX_ENTRIES rows in all,
    the least recently used word going first."""

    # 40 MB: a rowid and a weighted count (4 bytes each; counts weighted 1 and 0.5 are exact in
    # float32) per row of a kept word. At 100,000 real passages the words of a few hundred
    # questions took 1.5 million rows; with fewer kept, common words were read again and again.
    MAX_ENTRIES = 5_000_000

    def __init__(self, table: str, weights: tuple[float, ...], columns: tuple[str, ...]):
        self.table, self.weights = table, dict(zip(columns, weights))
        self._state: tuple = ()
        self._lengths = np.zeros(0, dtype=np.float32)  # tokens in each row, by rowid
        self._avgdl = 1.0
        self._words: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._entries = 0
        self._lock = threading.Lock()

    def _view(self, conn: sqlite3.Connection) -> str:
        """The table's fts5vocab instance view, made in this connection's temp schema (a read-only
        connection may: nothing is written to the store)."""
        view = f"{self.table}_instances"
        conn.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.{view} USING fts5vocab(main, {self.table}, instance)")
        return view

    def _rows_of(self, conn: sqlite3.Connection, key: str) -> tuple[np.ndarray, np.ndarray]:
        found = self._words.get(key)
        if found is not None:
            self._words.move_to_end(key)
            return found
        counted = conn.execute(
            f"SELECT doc, col, count(*) FROM temp.{self._view(conn)} WHERE term = ? GROUP BY doc, col", (key,)
        ).fetchall()
        docs = np.fromiter((r[0] for r in counted), dtype=np.int64, count=len(counted))
        weighted = np.fromiter(
            (self.weights.get(r[1], 0.0) * r[2] for r in counted), dtype=np.float64, count=len(counted)
        )
        rowids, at = np.unique(docs, return_inverse=True)
        freq = np.bincount(at, weights=weighted, minlength=len(rowids)).astype(np.float32)
        if len(rowids) and rowids[-1] < 2**31:
            rowids = rowids.astype(np.int32)
        found = (rowids, freq)
        self._words[key] = found
        self._entries += len(rowids)
        while self._entries > self.MAX_ENTRIES and len(self._words) > 1:
            _, (gone, _) = self._words.popitem(last=False)
            self._entries -= len(gone)
        return found

    def best(self, conn: sqlite3.Connection, words: list[str], k: int) -> list[tuple[int, float]] | None:
        """(rowid, BM25) of the k best rows for the words, best first; None when this cannot say
        exactly (nothing committed yet, or a word the index holds under a form Snowball's Porter
        stemmer does not give: FTS5 then ranks)."""
        rows, column_tokens, structure = index_state(conn, self.table)
        if rows == 0:
            return None
        with self._lock:
            state = (rows, tuple(column_tokens), structure)
            if state != self._state:
                self._lengths, self._avgdl = row_lengths(conn, self.table), sum(column_tokens) / rows
                self._words.clear()
                self._entries, self._state = 0, state
            scores = np.zeros(len(self._lengths), dtype=np.float64)
            seen: set[str] = set()
            for word in words:
                key = stem(word.lower())
                if not key or key in seen:
                    continue
                seen.add(key)
                rowids, freq = self._rows_of(conn, key)
                if not len(rowids):
                    if conn.execute(
                        f"SELECT 1 FROM {self.table} WHERE {self.table} MATCH ? LIMIT 1", (f'"{word}"',)
                    ).fetchone():
                        return None  # indexed under another form
                    continue
                if rowids[-1] >= len(scores):  # a row the lengths were read before: read again next time
                    self._state = ()
                    return None
                idf = max(math.log((rows - len(rowids) + 0.5) / (len(rowids) + 0.5)), 1e-6)
                norm = K1 * (1 - B + B * self._lengths[rowids].astype(np.float64) / self._avgdl)
                tf = freq.astype(np.float64)
                scores[rowids] += idf * tf * (K1 + 1) / (tf + norm)
        touched = np.flatnonzero(scores)
        if len(touched) > k:  # the k best and every row tied with the last of them
            kth = scores[touched[np.argpartition(-scores[touched], k - 1)[k - 1]]]
            touched = touched[scores[touched] >= kth]
        order = touched[np.lexsort((touched, -scores[touched]))][:k]  # best first; ties by rowid, as FTS5
        return [(int(r), float(scores[r])) for r in order]
