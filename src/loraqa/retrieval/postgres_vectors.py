"""Passage vectors in the PostgreSQL store: pgvector, one table per dimension, one HNSW index per
collection.

`loraqa_vectors_D` holds the D-dimension vectors of every collection, a row for each part of a
passage (`passage_id`, `part`; see passage_parts.py; the passage's rows go with it); each collection
with an embedder gets a partial HNSW index (cosine) on its own rows, which a search that names the
collection uses. A passage scores as its best part: the index's nearest rows are gathered by
passage. A table made before parts (one row a passage, keyed by passage alone) gets the `part`
column when vectors are next written, never by a search. pgvector 0.6's HNSW filters after it
searches its graph, so a filtered search scans the rows the filter keeps exactly instead; the HNSW search itself is asked for `hnsw.ef_search` = at least twice
the candidates wanted (its default, 40, would return fewer than a hybrid search's 50).

The extension is created when a collection first gets vectors (`CREATE EXTENSION IF NOT EXISTS
vector`: the user needs the right to, or an administrator runs it once), never by a search.
"""

from __future__ import annotations

import json
import re

import numpy as np

from loraqa.errors import LoraqaError
from loraqa.retrieval.passage_parts import per_passage, same_vectors

EMBEDDERS = """
CREATE TABLE IF NOT EXISTS loraqa_embedders (
    collection TEXT PRIMARY KEY REFERENCES loraqa_collections (name) ON DELETE CASCADE, info JSONB NOT NULL)
"""


def table(dim: int) -> str:
    return f"loraqa_vectors_{int(dim)}"


def literal(vector) -> str:
    """pgvector's text form of a vector."""
    return "[" + ",".join(f"{float(x):.6g}" for x in np.asarray(vector, dtype=np.float32).reshape(-1)) + "]"


def has_embedders_table(conn) -> bool:
    return conn.execute("SELECT to_regclass('loraqa_embedders')").fetchone()[0] is not None


def embedder_info(conn, collection: str) -> dict | None:
    if not has_embedders_table(conn):
        return None
    row = conn.execute("SELECT info FROM loraqa_embedders WHERE collection = %s", (collection,)).fetchone()
    return (row[0] if isinstance(row[0], dict) else json.loads(row[0])) if row else None


def _index_name(collection: str, dim: int) -> str:
    return f"loraqa_hnsw_{dim}_" + re.sub(r"[^a-z0-9_]", "_", collection.lower())[:40]


def set_embedder(conn, collection: str, info: dict | None) -> None:
    """In the caller's transaction: record the embedder (its vectors' table and index made if
    need be); another model or part size deletes the collection's vectors."""
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except Exception as exc:  # noqa: BLE001 - psycopg raises its own types; all mean "no pgvector here"
        raise LoraqaError(
            f"the PostgreSQL store cannot give collections vectors: pgvector is not available "
            f"({str(exc).splitlines()[0][:120]}); install pgvector in the server, or have an "
            "administrator run CREATE EXTENSION vector once"
        ) from None
    conn.execute(EMBEDDERS)
    current = embedder_info(conn, collection)
    if current == info or same_vectors(current, info):
        return
    if current is not None:
        conn.execute(f"DELETE FROM {table(current['dim'])} WHERE collection = %s", (collection,))
        conn.execute("DELETE FROM loraqa_embedders WHERE collection = %s", (collection,))
    if info is None:
        return
    dim = int(info["dim"])
    ensure_table(conn, dim)
    conn.execute(
        f"CREATE INDEX IF NOT EXISTS {_index_name(collection, dim)} ON {table(dim)} USING hnsw "
        f"(embedding vector_cosine_ops) WHERE collection = '{collection}'"
    )  # a checked name: no quote in it
    conn.execute("INSERT INTO loraqa_embedders VALUES (%s, %s)", (collection, json.dumps(info)))


def ensure_table(conn, dim: int) -> bool:
    """The vectors' table, with a row for each part of a passage: one made before parts is given
    its `part` column and key (in the caller's transaction). True: it was already so."""
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {table(dim)} (passage_id BIGINT NOT NULL REFERENCES loraqa_passages (id) "
        f"ON DELETE CASCADE, collection TEXT NOT NULL, embedding vector({dim}) NOT NULL, "
        "part SMALLINT NOT NULL DEFAULT 0, PRIMARY KEY (passage_id, part))"
    )
    key = conn.execute(
        "SELECT conname, array_length(conkey, 1) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
        (table(dim),),
    ).fetchone()
    if key is not None and key[1] == 1:
        conn.execute(f"ALTER TABLE {table(dim)} ADD COLUMN IF NOT EXISTS part SMALLINT NOT NULL DEFAULT 0")
        conn.execute(f'ALTER TABLE {table(dim)} DROP CONSTRAINT "{key[0]}", ADD PRIMARY KEY (passage_id, part)')
        return False
    return True


def write(conn, collection: str, passage_ids: list[int], vectors, dim: int) -> None:
    """In the caller's transaction: each passage's vectors (see passage_parts.per_passage), in
    place of any it had (the table as ensure_table leaves it)."""
    own = per_passage(vectors, len(passage_ids), dim)
    conn.execute(f"DELETE FROM {table(dim)} WHERE passage_id = ANY(%s)", ([int(i) for i in passage_ids],))
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {table(dim)} (passage_id, part, collection, embedding) VALUES (%s, %s, %s, %s::vector)",
            [
                (int(pid), part, collection, literal(v))
                for pid, parts in zip(passage_ids, own)
                for part, v in enumerate(parts)
            ],
        )


def nearest(
    conn, collection: str, dim: int, vector, k: int, where: tuple[str, list] | None = None
) -> list[tuple[int, float]]:
    """(passage id, cosine) of the k nearest, best first; where: a condition on passages p and
    documents d, with its parameters (then an exact scan of the rows it keeps: pgvector 0.6's
    HNSW filters after its search, and could return fewer than k)."""
    q = literal(vector)
    if where is not None:
        condition, params = where
        rows = conn.execute(
            f"SELECT v.passage_id, max(1 - (v.embedding <=> %s::vector)) AS score FROM {table(dim)} v "
            "JOIN loraqa_passages p ON p.id = v.passage_id JOIN loraqa_documents d ON d.collection = p.collection "
            f"AND d.id = p.document_id WHERE v.collection = %s AND p.collection = %s AND {condition} "
            "GROUP BY v.passage_id ORDER BY score DESC, v.passage_id LIMIT %s",
            (q, collection, collection, *params, k),
        ).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]
    rows_wanted = 4 * int(k)  # a passage has a few parts: rows enough for k passages, asked again if not
    while True:
        with conn.transaction():
            conn.execute(f"SET LOCAL hnsw.ef_search = {max(40, 2 * rows_wanted)}")
            rows = conn.execute(
                f"SELECT passage_id, 1 - (embedding <=> %s::vector) FROM {table(dim)} WHERE collection = %s "
                "ORDER BY embedding <=> %s::vector LIMIT %s",
                (q, collection, q, rows_wanted),
            ).fetchall()
        best: dict[int, float] = {}
        for pid, score in rows:  # nearest first: a passage's first row is its best part
            best.setdefault(int(pid), float(score))
        if len(best) >= k or len(rows) < rows_wanted:
            return list(best.items())[:k]
        rows_wanted *= 4


def similarities(conn, collection: str, dim: int, vector, passage_ids: list[int]) -> dict[int, float]:
    """The cosine of each of these passages with `vector` (its best part's)."""
    if not passage_ids:
        return {}
    rows = conn.execute(
        f"SELECT passage_id, max(1 - (embedding <=> %s::vector)) FROM {table(dim)} WHERE collection = %s "
        "AND passage_id = ANY(%s) GROUP BY passage_id",
        (literal(vector), collection, [int(i) for i in passage_ids]),
    )
    return {int(r[0]): float(r[1]) for r in rows}


def documents_without_vectors(conn, collection: str, dim: int) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            f"SELECT DISTINCT p.document_id FROM loraqa_passages p LEFT JOIN {table(dim)} v ON v.passage_id = p.id "
            "WHERE p.collection = %s AND v.passage_id IS NULL ORDER BY p.document_id",
            (collection,),
        )
    ]
