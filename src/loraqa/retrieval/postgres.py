"""The shared store: collections in one PostgreSQL database, for many server replicas at once.

`--store postgresql://user@host/db`. Passages are indexed by PostgreSQL's own full-text search (a
`tsvector` of the passage's words, weight A, and its document's title, weight C, under the
English configuration, behind a GIN index) and ranked by `ts_rank_cd`, PostgreSQL's cover-density
rank: its scores are on another scale than SQLite's BM25 (set `retrieval.min_score` for the store
you use). Every document is written in one transaction, as in the SQLite store; each thread has
its own connection.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

from loraqa import optional
from loraqa.documents import Document, Passage
from loraqa.errors import LoraqaError, UnknownCollection, UsageError, option
from loraqa.retrieval import postgres_vectors as pgvec
from loraqa.retrieval.filters import Filter, glob_to_like
from loraqa.retrieval.store import (
    DocumentInfo,
    Hit,
    QueryLimits,
    Settings,
    check_collection_name,
    is_conflict,
    query_terms,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS loraqa_collections (
    name TEXT PRIMARY KEY, passage_chars INTEGER NOT NULL, overlap INTEGER NOT NULL, created DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS loraqa_documents (
    collection TEXT NOT NULL REFERENCES loraqa_collections (name) ON DELETE CASCADE, id TEXT NOT NULL,
    source TEXT NOT NULL, title TEXT NOT NULL, text TEXT NOT NULL, content_hash TEXT NOT NULL,
    page_starts JSONB NOT NULL, headings JSONB NOT NULL, modified DOUBLE PRECISION, metadata JSONB NOT NULL,
    added DOUBLE PRECISION NOT NULL, file TEXT, PRIMARY KEY (collection, id));
CREATE INDEX IF NOT EXISTS loraqa_documents_by_source ON loraqa_documents (collection, source);
CREATE TABLE IF NOT EXISTS loraqa_passages (
    id BIGSERIAL PRIMARY KEY, collection TEXT NOT NULL, document_id TEXT NOT NULL, idx INTEGER NOT NULL,
    start INTEGER NOT NULL, "end" INTEGER NOT NULL, page INTEGER, heading TEXT, text TEXT NOT NULL,
    tsv TSVECTOR NOT NULL,
    FOREIGN KEY (collection, document_id) REFERENCES loraqa_documents (collection, id) ON DELETE CASCADE);
CREATE INDEX IF NOT EXISTS loraqa_passages_tsv ON loraqa_passages USING GIN (tsv);
CREATE INDEX IF NOT EXISTS loraqa_passages_by_document ON loraqa_passages (collection, document_id);
CREATE TABLE IF NOT EXISTS loraqa_files (
    collection TEXT NOT NULL REFERENCES loraqa_collections (name) ON DELETE CASCADE, path TEXT NOT NULL,
    modified DOUBLE PRECISION NOT NULL, size BIGINT NOT NULL, PRIMARY KEY (collection, path));
"""
SEARCH = """
SELECT p.document_id, d.title, d.source, p.page, p.start, p."end", ts_rank_cd(p.tsv, q) AS score, p.text,
       ts_headline('english', p.text, q, 'StartSel=«, StopSel=», MaxWords=40, MinWords=15, MaxFragments=2'),
       p.heading, p.id
FROM loraqa_passages p JOIN loraqa_documents d ON d.collection = p.collection AND d.id = p.document_id,
     to_tsquery('english', %s) q
WHERE p.collection = %s AND p.tsv @@ q {only}
ORDER BY score DESC, p.id LIMIT %s
"""
BY_ID = """
SELECT p.document_id, d.title, d.source, p.page, p.start, p."end", p.text, p.heading, p.id
FROM loraqa_passages p JOIN loraqa_documents d ON d.collection = p.collection AND d.id = p.document_id
WHERE p.collection = %s AND p.id = ANY(%s)
"""
# a query word in more than COMMON of the passages does not pick candidates; the best CANDIDATES
# passages by the other words are scored with all of them
COMMON, CANDIDATES = 0.05, 200
COUNT_TTL = 30.0
BATCH_PASSAGES = 2000  # passages per transaction while adding files (several whole documents)


class PostgresCollection:
    def __init__(self, store: PostgresStore, name: str, settings: Settings):
        self.store, self.name, self.settings = store, name, settings
        self._counted: tuple[float, int] | None = None
        self._wrote: Callable[[int], None] | None = None  # inside batch(): told how many passages each put wrote
        self._vectors_table_ready = False  # its vectors' table checked once, not at every document

    @contextmanager
    def _write(self):
        """One transaction; inside a batch, a savepoint of the batch's transaction (a document that
        fails rolls back alone)."""
        conn = self.store.conn
        with conn.transaction():
            yield conn

    @contextmanager
    def batch(self, passages: int = BATCH_PASSAGES):
        """Whole documents written in shared transactions of about `passages` passages: each
        commit costs a flush to disk, and one per document held ingestion to ~1,500 passages/s.
        A kill loses the uncommitted batch (whole documents, and their files stay unread, so a
        rerun adds them), never part of a document."""
        conn = self.store.conn
        state = {"pending": 0, "tx": conn.transaction()}
        state["tx"].__enter__()

        def wrote(n: int) -> None:
            state["pending"] += n
            if state["pending"] >= passages:
                tx, state["tx"], state["pending"] = state["tx"], conn.transaction(), 0
                tx.__exit__(None, None, None)
                state["tx"].__enter__()

        self._wrote = wrote
        try:
            yield
        except BaseException as exc:
            state["tx"].__exit__(type(exc), exc, exc.__traceback__)
            raise
        else:
            state["tx"].__exit__(None, None, None)
        finally:
            self._wrote = None

    def _passages_now(self) -> int:
        """The collection's passage count, read at most every COUNT_TTL seconds (a count scans)."""
        now = time.monotonic()
        if self._counted is None or now - self._counted[0] > COUNT_TTL:
            self._counted = (now, self.counts()[1])
        return self._counted[1]

    @property
    def query_limits(self) -> QueryLimits:
        return self.store.query_limits

    def close(self) -> None:
        """Every transaction is committed as it ends: nothing to fold in."""

    def file_unchanged(self, path: str, modified: float, size: int) -> bool:
        row = self.store.conn.execute(
            "SELECT modified, size FROM loraqa_files WHERE collection = %s AND path = %s", (self.name, path)
        ).fetchone()
        return row is not None and row[0] == modified and row[1] == size

    def file_done(self, path: str, modified: float, size: int) -> None:
        with self._write() as c:
            c.execute(
                "INSERT INTO loraqa_files VALUES (%s, %s, %s, %s) ON CONFLICT (collection, path) "
                "DO UPDATE SET modified = EXCLUDED.modified, size = EXCLUDED.size",
                (self.name, path, modified, size),
            )

    def put(self, document: Document, passages: list[Passage], file: str | None = None, vectors=None) -> str:
        info = self.embedder_info()
        if info is not None and vectors is None:
            raise UsageError(
                f"the collection {self.name} has an embedder ({info['name']}): its documents go in with their vectors"
            )
        with self._write() as c:
            same = c.execute(
                "SELECT content_hash, file FROM loraqa_documents WHERE collection = %s AND id = %s",
                (self.name, document.id),
            ).fetchone()
            if same is not None and same[0] == document.content_hash:
                return "unchanged"
            if same is not None and is_conflict(same[1], file):
                return "conflict"
            old = c.execute(
                "DELETE FROM loraqa_documents WHERE collection = %s AND (source = %s OR id = %s) RETURNING id",
                (self.name, document.source, document.id),
            ).fetchall()
            c.execute(
                "INSERT INTO loraqa_documents VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    self.name,
                    document.id,
                    document.source,
                    document.title,
                    document.text,
                    document.content_hash,
                    json.dumps(document.page_starts),
                    json.dumps(document.headings),
                    document.modified,
                    json.dumps(document.metadata, ensure_ascii=False, default=str),
                    time.time(),
                    file,
                ),
            )
            with c.cursor() as cur:
                cur.executemany(
                    'INSERT INTO loraqa_passages (collection, document_id, idx, start, "end", page, heading, text, tsv) '
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, setweight(to_tsvector('english', %s), 'A') || "
                    "setweight(to_tsvector('english', %s), 'C'))",
                    [
                        (
                            self.name,
                            document.id,
                            p.index,
                            p.start,
                            p.end,
                            p.page,
                            p.heading,
                            p.text,
                            p.text,
                            document.title,
                        )
                        for p in passages
                    ],
                )
            if info is not None:
                self._write_vectors(c, document.id, vectors, info["dim"])
        if self._wrote is not None:
            self._wrote(len(passages))
        return "replaced" if old else "added"

    def _write_vectors(self, c, document_id: str, vectors, dim: int) -> None:
        if not self._vectors_table_ready:
            # a table it had to change is checked again: the change is undone if this write is
            self._vectors_table_ready = pgvec.ensure_table(c, dim)
        pgvec.write(c, self.name, self._passage_ids(c, document_id), vectors, dim)

    def _passage_ids(self, c, document_id: str) -> list[int]:
        return [
            r[0]
            for r in c.execute(
                "SELECT id FROM loraqa_passages WHERE collection = %s AND document_id = %s ORDER BY idx",
                (self.name, document_id),
            )
        ]

    # ------------------------------------------------------------ vectors

    def embedder_info(self) -> dict | None:
        return pgvec.embedder_info(self.store.conn, self.name)

    def set_embedder(self, info: dict | None) -> None:
        with self._write() as c:
            pgvec.set_embedder(c, self.name, info)

    def put_vectors(self, document_id: str, vectors) -> None:
        info = self.embedder_info()
        if info is None:
            raise UsageError(f"the collection {self.name} has no embedder")
        with self._write() as c:
            self._write_vectors(c, document_id, vectors, info["dim"])

    def documents_without_vectors(self) -> list[str]:
        info = self.embedder_info()
        return (
            pgvec.documents_without_vectors(self.store.conn, self.name, info["dim"])
            if info
            else [d.id for d in self.documents()]
        )

    def _where(self, where: Filter) -> tuple[str, list]:
        """The condition (on passages p and documents d) a filter puts, and its parameters."""
        conds: list[str] = []
        params: list = []
        if where.documents:
            conds.append("d.id = ANY(%s)")
            params.append(list(where.documents))
        for column, pattern in (("source", where.source), ("title", where.title)):
            if pattern is not None:
                conds.append(f"d.{column} LIKE %s")
                params.append(glob_to_like(pattern))
        if where.pages is not None:
            conds.append("p.page BETWEEN %s AND %s")
            params += list(where.pages)
        for key, value in where.meta:
            conds.append("d.metadata ->> %s = %s")
            params += [key, value]
        return " AND ".join(conds) or "TRUE", params

    def nearest(self, vector, k: int = 5, where: Filter | None = None) -> list[Hit]:
        info = self.embedder_info()
        if info is None:
            raise UsageError(
                f"the collection {self.name} has no vectors: add them with `loraqa collection embed "
                f"{self.name} --embedder MODEL`, or search it lexically"
            )
        return self.hits(
            pgvec.nearest(
                self.store.conn, self.name, info["dim"], vector, k, self._where(where) if where is not None else None
            )
        )

    def similarities(self, vector, passage_ids: list[int]) -> dict[int, float]:
        info = self.embedder_info()
        return pgvec.similarities(self.store.conn, self.name, info["dim"], vector, passage_ids) if info else {}

    def hits(self, scored: list[tuple[int, float]]) -> list[Hit]:
        if not scored:
            return []
        rows = {r[-1]: r for r in self.store.conn.execute(BY_ID, (self.name, [pid for pid, _ in scored]))}
        out = []
        for pid, score in scored:
            doc, title, source, page, start, end, text, heading, _ = rows[pid]
            out.append(Hit(doc, title, source, page, start, end, score, text, "", heading, self.name, pid))
        return out

    def remove(self, document_id: str) -> bool:
        with self._write() as c:
            row = c.execute(
                "DELETE FROM loraqa_documents WHERE collection = %s AND id = %s RETURNING file",
                (self.name, document_id),
            ).fetchone()
            if row is None:
                return False
            c.execute("DELETE FROM loraqa_files WHERE collection = %s AND path = %s", (self.name, row[0]))
            return True

    def documents(self) -> list[DocumentInfo]:
        rows = self.store.conn.execute(
            "SELECT d.id, d.title, d.source, (SELECT count(*) FROM loraqa_passages p WHERE p.collection = d.collection "
            "AND p.document_id = d.id), length(d.text), d.modified FROM loraqa_documents d WHERE d.collection = %s "
            "ORDER BY d.source",
            (self.name,),
        )
        return [DocumentInfo(*row) for row in rows]

    def document(self, document_id: str) -> Document | None:
        row = self.store.conn.execute(
            "SELECT source, title, text, id, page_starts, headings, modified, metadata "
            "FROM loraqa_documents WHERE collection = %s AND id = %s",
            (self.name, document_id),
        ).fetchone()
        if row is None:
            return None
        source, title, text, id_, pages, headings, modified, metadata = row
        return Document(source, title, text, id_, list(pages), [tuple(h) for h in headings], modified, metadata)

    def passages(self, document_id: str) -> list[Passage]:
        rows = self.store.conn.execute(
            'SELECT idx, start, "end", page, heading, text FROM loraqa_passages '
            "WHERE collection = %s AND document_id = %s ORDER BY idx",
            (self.name, document_id),
        )
        return [Passage(document_id, i, s, e, text, page, heading) for i, s, e, page, heading, text in rows]

    def search(self, query: str, k: int = 5, where: Filter | None = None) -> list[Hit]:
        """The k best passages for all the query's words; when some words are common, only the
        passages its selective words find are ranked (as in the SQLite store: ranking every
        passage that holds "bought" costs 100 ms at 20,000 passages)."""
        terms = query_terms(query, self.store.query_limits)
        c = self.store.conn
        everything = " | ".join(f"'{t}'" for t in terms)  # \w+ words, safe inside tsquery quotes
        if where is not None:
            condition, params = self._where(where)
            rows = c.execute(SEARCH.format(only=f"AND {condition}"), (everything, self.name, *params, k))
        else:
            selective = self._selective(terms)
            if len(selective) == len(terms):
                rows = c.execute(SEARCH.format(only=""), (everything, self.name, k))
            else:
                candidates = [
                    r[0]
                    for r in c.execute(
                        "SELECT id FROM loraqa_passages, to_tsquery('english', %s) q WHERE collection = %s AND tsv @@ q "
                        "ORDER BY ts_rank_cd(tsv, q) DESC LIMIT %s",
                        (" | ".join(f"'{t}'" for t in selective), self.name, max(CANDIDATES, 4 * k)),
                    )
                ]
                rows = c.execute(SEARCH.format(only="AND p.id = ANY(%s)"), (everything, self.name, candidates, k))
        return [Hit.of_row(row, self.name, row[10]) for row in rows]

    def _selective(self, terms: list[str]) -> list[str]:
        limit = max(1000, int(COMMON * self._passages_now()))
        probe = (
            "SELECT count(*) FROM (SELECT 1 FROM loraqa_passages WHERE collection = %s AND "
            "tsv @@ to_tsquery('english', %s) LIMIT %s) found"
        )
        selective = [
            t for t in terms if self.store.conn.execute(probe, (self.name, f"'{t}'", limit)).fetchone()[0] < limit
        ]
        return selective or terms

    def counts(self) -> tuple[int, int]:
        c = self.store.conn
        return (
            c.execute("SELECT count(*) FROM loraqa_documents WHERE collection = %s", (self.name,)).fetchone()[0],
            c.execute("SELECT count(*) FROM loraqa_passages WHERE collection = %s", (self.name,)).fetchone()[0],
        )


class PostgresStore:
    """Collections as rows of one PostgreSQL database's loraqa_* tables."""

    def __init__(self, url: str, query_limits: QueryLimits | None = None):
        self.query_limits = query_limits or QueryLimits()
        self.psycopg = optional.require("psycopg", f"the PostgreSQL store ({option('store')} postgresql://...)")
        self.url = url
        self._local = threading.local()
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(5316)")  # replicas making the tables at once
            self.conn.execute(SCHEMA)

    @property
    def conn(self):
        if getattr(self._local, "conn", None) is None:
            try:
                conn = self.psycopg.connect(self.url, autocommit=True)
            except self.psycopg.OperationalError as exc:
                raise LoraqaError(f"cannot reach the PostgreSQL store ({str(exc).splitlines()[0][:160]})") from None
            # A document's transaction is still all or nothing; only a server crash in the last moments
            # can lose it, and `collection add` run again adds it back. Measured: 343 documents/s with a
            # flush at every commit.
            conn.execute("SET synchronous_commit TO off")
            self._local.conn = conn
        return self._local.conn

    def names(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM loraqa_collections ORDER BY name")]

    def _settings(self, name: str) -> Settings | None:
        row = self.conn.execute(
            "SELECT passage_chars, overlap FROM loraqa_collections WHERE name = %s", (name,)
        ).fetchone()
        return Settings(*row) if row else None

    def open(self, name: str) -> PostgresCollection:
        check_collection_name(name)
        settings = self._settings(name)
        if settings is None:
            known = ", ".join(self.names()) or "none yet"
            raise UnknownCollection(
                f"no collection named '{name}' in the PostgreSQL store (there are: {known}); make "
                f"it with `loraqa collection add {name} PATH...`"
            )
        return PostgresCollection(self, name, settings)

    def create(self, name: str, settings: Settings) -> PostgresCollection:
        check_collection_name(name)
        self.conn.execute(
            "INSERT INTO loraqa_collections VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO NOTHING",
            (name, settings.passage_chars, settings.overlap, time.time()),
        )
        return self.open(name)

    def drop(self, name: str) -> None:
        self.open(name)
        with self.conn.transaction():
            self.conn.execute("DELETE FROM loraqa_passages WHERE collection = %s", (name,))
            self.conn.execute("DELETE FROM loraqa_collections WHERE name = %s", (name,))
