"""The embedded store: one SQLite database per collection (`DIR/NAME.sqlite`), BM25 by FTS5.

WAL journaling, so searches go on while documents are added (a search opens the database
read-only and takes no lock; a store the process may not write is opened immutable); every document (its row, its
passages, their index entries) is written in one transaction, so a crash never leaves half a
document searchable. Passages are indexed with FTS5's porter stemmer (so "doses" finds "dose")
and ranked by its BM25, the passage's own words weighing twice its document's title. Each thread
gets its own connection (a server searches from several).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from loraqa.documents import Document, Passage
from loraqa.errors import UnknownCollection, UsageError
from loraqa.retrieval import sqlite_vectors as vec
from loraqa.retrieval.filters import Filter
from loraqa.retrieval.postings import Postings
from loraqa.retrieval.snippets import with_snippets
from loraqa.retrieval.store import (
    NAME_PATTERN,
    DocumentInfo,
    Hit,
    QueryLimits,
    Settings,
    check_collection_name,
    is_conflict,
    query_terms,
)

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY, source TEXT NOT NULL, title TEXT NOT NULL, text TEXT NOT NULL,
    content_hash TEXT NOT NULL, page_starts TEXT NOT NULL, headings TEXT NOT NULL, modified REAL,
    metadata TEXT NOT NULL, added REAL NOT NULL, file TEXT);
CREATE INDEX IF NOT EXISTS documents_by_source ON documents (source);
CREATE TABLE IF NOT EXISTS passages (
    id INTEGER PRIMARY KEY, document_id TEXT NOT NULL, idx INTEGER NOT NULL, start INTEGER NOT NULL,
    "end" INTEGER NOT NULL, page INTEGER, heading TEXT);
CREATE INDEX IF NOT EXISTS passages_by_document ON passages (document_id);
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, modified REAL NOT NULL, size INTEGER NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS passages_fts USING fts5(text, title, tokenize='porter unicode61 remove_diacritics 2');
"""
    + vec.VECTOR_SCHEMA
)
# BM25 weights of the indexed columns: the passage's text, its document's title
WEIGHTS = (1.0, 0.5)
# Snippets are made for the k hits only (retrieval/search.py), not by FTS5's snippet() here: a
# column of the ranked rows is computed for every matching row before the sort (measured: most of
# a query's time on real text at 3,000 passages).
SEARCH = f"""
WITH ranked AS (
    SELECT rowid, bm25(passages_fts, {WEIGHTS[0]}, {WEIGHTS[1]}) AS rank
    FROM passages_fts WHERE passages_fts MATCH ? {{only}} ORDER BY rank LIMIT ?)
SELECT p.document_id, d.title, d.source, p.page, p.start, p."end", -ranked.rank, f.text, '', p.heading,
       '' AS collection, p.id
FROM ranked JOIN passages p ON p.id = ranked.rowid JOIN documents d ON d.id = p.document_id
     JOIN passages_fts f ON f.rowid = ranked.rowid
ORDER BY ranked.rank
"""
BY_ID = """
SELECT p.document_id, d.title, d.source, p.page, p.start, p."end", f.text, p.heading, p.id
FROM passages p JOIN documents d ON d.id = p.document_id JOIN passages_fts f ON f.rowid = p.id
WHERE p.id IN ({})
"""


class SqliteCollection:
    """Reading opens the database read-only and writes nothing (no lock, no schema, no journal
    setting): a search never waits behind an add, and a store this process may not write can
    still be searched. The first write of a thread opens its writing connection."""

    def __init__(self, path: Path, name: str, query_limits: QueryLimits | None = None):
        self.path, self.name = path, name
        self.query_limits = query_limits or QueryLimits()
        self._local = threading.local()
        try:
            rows = dict(self.conn.execute("SELECT key, value FROM settings"))
        except sqlite3.DatabaseError as exc:
            raise UsageError(
                f"the collection {name} cannot be read ({exc}); is {path.name} a loraqa collection?"
            ) from None
        self.settings = Settings(
            **{k: json.loads(str(v)) for k, v in rows.items() if k in Settings.__dataclass_fields__}
        )
        self.index = vec.VectorIndex()
        self._postings = Postings("passages_fts", WEIGHTS, ("text", "title"))

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection: the writing one once it has written, else a read-only one."""
        local = self._local
        if getattr(local, "writer", None) is not None:
            return local.writer
        if getattr(local, "reader", None) is None:
            local.reader = self._read_only()
        return local.reader

    def _read_only(self) -> sqlite3.Connection:
        """mode=ro works wherever the write-ahead log's index can be opened (it exists, or the
        folder is writable); a store the process can neither write nor find a log beside is
        opened immutable (nothing can change it meanwhile: nobody here may write it)."""
        uri = self.path.resolve().as_uri()
        try:
            conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, timeout=30)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:
            if os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK):
                raise
        conn = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn

    @property
    def writer(self) -> sqlite3.Connection:
        local = self._local
        if getattr(local, "writer", None) is None:
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")  # WAL keeps every committed transaction at a crash
                conn.executescript(SCHEMA)
            except sqlite3.OperationalError as exc:
                raise UsageError(
                    f"the collection {self.name} cannot be written ({exc}); check the store's permissions"
                ) from None
            local.writer = conn
            if getattr(local, "reader", None) is not None:
                local.reader.close()
                local.reader = None
        return local.writer

    def close(self) -> None:
        local = self._local
        if getattr(local, "writer", None) is not None:
            local.writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            local.writer.close()
            local.writer = None

    @contextmanager
    def batch(self, passages: int = 0):
        """Every document is its own transaction here: a commit in WAL mode with synchronous=NORMAL
        does not flush to disk, so sharing them gains nothing (5,000 passages/s either way)."""
        yield

    @contextmanager
    def _write(self):
        """One transaction, taken for writing at once (no other writer can slip in between)."""
        c = self.writer
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    # ------------------------------------------------------------ writing

    def file_unchanged(self, path: str, modified: float, size: int) -> bool:
        row = self.conn.execute("SELECT modified, size FROM files WHERE path = ?", (path,)).fetchone()
        return row is not None and row[0] == modified and row[1] == size

    def file_done(self, path: str, modified: float, size: int) -> None:
        with self._write() as c:
            c.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?)", (path, modified, size))

    def put(self, document: Document, passages: list[Passage], file: str | None = None, vectors=None) -> str:
        info = self.embedder_info()
        if info is not None and vectors is None:
            raise UsageError(
                f"the collection {self.name} has an embedder ({info['name']}): its documents go in with their vectors"
            )
        with self._write() as c:
            same = c.execute("SELECT content_hash, file FROM documents WHERE id = ?", (document.id,)).fetchone()
            if same is not None and same[0] == document.content_hash:
                return "unchanged"
            if same is not None and is_conflict(same[1], file):
                return "conflict"
            old = [
                r[0]
                for r in c.execute(
                    "SELECT id FROM documents WHERE source = ? OR id = ?", (document.source, document.id)
                )
            ]
            for old_id in old:
                self._delete(c, old_id)
            c.execute(
                "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
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
            self._count(c, len(passages))
            rowids = []
            for p in passages:
                rowid = c.execute(
                    'INSERT INTO passages (document_id, idx, start, "end", page, heading) VALUES (?, ?, ?, ?, ?, ?)',
                    (document.id, p.index, p.start, p.end, p.page, p.heading),
                ).lastrowid
                c.execute(
                    "INSERT INTO passages_fts (rowid, text, title) VALUES (?, ?, ?)", (rowid, p.text, document.title)
                )
                rowids.append(rowid)
            if info is not None:
                vec.write(c, rowids, vectors, info["dim"])
            return "replaced" if old else "added"

    def _delete(self, c: sqlite3.Connection, document_id: str) -> None:
        c.execute(
            "DELETE FROM passages_fts WHERE rowid IN (SELECT id FROM passages WHERE document_id = ?)", (document_id,)
        )
        if c.execute(
            "DELETE FROM vectors WHERE passage_id IN (SELECT id FROM passages WHERE document_id = ?)", (document_id,)
        ).rowcount:
            vec.bump(c)
        gone = c.execute("DELETE FROM passages WHERE document_id = ?", (document_id,)).rowcount
        c.execute("DELETE FROM documents WHERE id = ?", (document_id,))
        self._count(c, -gone)

    @staticmethod
    def _count(c: sqlite3.Connection, change: int) -> None:
        c.execute(
            "INSERT INTO settings VALUES ('passages', ?) ON CONFLICT (key) DO UPDATE SET value = "
            "CAST(value AS INTEGER) + ?",
            (max(change, 0), change),
        )

    def remove(self, document_id: str) -> bool:
        with self._write() as c:
            row = c.execute("SELECT file FROM documents WHERE id = ?", (document_id,)).fetchone()
            if row is None:
                return False
            self._delete(c, document_id)
            c.execute("DELETE FROM files WHERE path = ?", (row[0],))  # a rerun of `add` reads the file again
            return True

    # ------------------------------------------------------------ vectors

    def embedder_info(self) -> dict | None:
        try:
            return vec.embedder_info(self.conn)
        except sqlite3.OperationalError:  # a store made before vectors: none
            return None

    def set_embedder(self, info: dict | None) -> None:
        with self._write() as c:
            vec.set_embedder(c, info)

    def put_vectors(self, document_id: str, vectors) -> None:
        info = self.embedder_info()
        if info is None:
            raise UsageError(f"the collection {self.name} has no embedder")
        with self._write() as c:
            ids = [
                r[0] for r in c.execute("SELECT id FROM passages WHERE document_id = ? ORDER BY idx", (document_id,))
            ]
            vec.write(c, ids, vectors, info["dim"])

    def documents_without_vectors(self) -> list[str]:
        return [
            r[0]
            for r in self.conn.execute(
                "SELECT DISTINCT p.document_id FROM passages p LEFT JOIN vectors v ON v.passage_id = p.id "
                "WHERE v.passage_id IS NULL ORDER BY p.document_id"
            )
        ]

    def _where(self, where: Filter) -> tuple[str, list]:
        """The ids of the passages a filter keeps, as a subquery and its parameters."""
        conds: list[str] = []
        params: list = []
        if where.documents:
            conds.append(f"d.id IN ({','.join('?' * len(where.documents))})")
            params += list(where.documents)
        for column, pattern in (("source", where.source), ("title", where.title)):
            if pattern is not None:
                conds.append(f"d.{column} GLOB ?")
                params.append(pattern)
        if where.pages is not None:
            conds.append("p.page BETWEEN ? AND ?")
            params += list(where.pages)
        for key, value in where.meta:
            conds.append("CAST(json_extract(d.metadata, ?) AS TEXT) = ?")
            params += [f'$."{key}"', value]
        sql = "SELECT p.id FROM passages p JOIN documents d ON d.id = p.document_id WHERE " + (
            " AND ".join(conds) or "1"
        )
        return sql, params

    def nearest(self, vector, k: int = 5, where: Filter | None = None) -> list[Hit]:
        info = self.embedder_info()
        if info is None:
            raise UsageError(
                f"the collection {self.name} has no vectors: add them with `loraqa collection embed "
                f"{self.name} --embedder MODEL`, or search it lexically"
            )
        vectors = self.index.current(self.conn, info["dim"])
        allowed = None
        if where is not None:
            sql, params = self._where(where)
            allowed = {r[0] for r in self.conn.execute(sql, params)}
        return self.hits(vec.best(vectors, vector, k, allowed))

    def similarities(self, vector, passage_ids: list[int]) -> dict[int, float]:
        """The cosine of each passage with `vector` (its best part's)."""
        info = self.embedder_info()
        if info is None or not passage_ids:
            return {}
        return self.index.current(self.conn, info["dim"]).cosines(vector, passage_ids)

    def hits(self, scored: list[tuple[int, float]]) -> list[Hit]:
        """Hits for (passage id, score) pairs, in their order."""
        if not scored:
            return []
        rows = {r[-1]: r for r in self.conn.execute(BY_ID.format(",".join(str(int(i)) for i, _ in scored)))}
        out = []
        for pid, score in scored:
            doc, title, source, page, start, end, text, heading, _ = rows[pid]
            out.append(Hit(doc, title, source, page, start, end, score, text, "", heading, self.name, pid))
        return out

    # ------------------------------------------------------------ reading

    def documents(self) -> list[DocumentInfo]:
        rows = self.conn.execute(
            "SELECT d.id, d.title, d.source, (SELECT count(*) FROM passages p WHERE p.document_id = d.id), "
            "length(d.text), d.modified FROM documents d ORDER BY d.source"
        )
        return [DocumentInfo(*row) for row in rows]

    def document(self, document_id: str) -> Document | None:
        row = self.conn.execute(
            "SELECT source, title, text, id, page_starts, headings, modified, metadata FROM documents WHERE id = ?",
            (document_id,),
        ).fetchone()
        if row is None:
            return None
        source, title, text, id_, pages, headings, modified, metadata = row
        return Document(
            source,
            title,
            text,
            id_,
            json.loads(pages),
            [tuple(h) for h in json.loads(headings)],
            modified,
            json.loads(metadata),
        )

    def passages(self, document_id: str) -> list[Passage]:
        doc = self.document(document_id)
        if doc is None:
            return []
        rows = self.conn.execute(
            'SELECT idx, start, "end", page, heading FROM passages WHERE document_id = ? ORDER BY idx', (document_id,)
        )
        return [Passage(document_id, i, s, e, doc.text[s:e], page, heading) for i, s, e, page, heading in rows]

    def search(self, query: str, k: int = 5, where: Filter | None = None) -> list[Hit]:
        """The k passages with the best BM25 over all the query's words: over the whole collection
        from the index's own counts kept in memory (retrieval/postings.py; FTS5's ORDER BY rank
        walks every matching row's positions, slow when a word is common), or by FTS5 itself
        within a filter's passages and where those counts cannot say."""
        terms = query_terms(query, self.query_limits)
        everything = " OR ".join(f'"{t}"' for t in terms)  # \w+ words, safe inside FTS5 quotes
        if where is not None:  # the filter's passages: score them all
            sql, params = self._where(where)
            return self._ranked(f"AND rowid IN ({sql})", (everything, *params, k), query)
        best = self._postings.best(self.conn, terms, k)
        if best is None:
            return self._ranked("", (everything, k), query)
        return with_snippets(self.hits(best), query)

    def _ranked(self, only: str, params: tuple, query: str) -> list[Hit]:
        """The best hits by FTS5's own BM25 among the matching rows `only` keeps."""
        rows = self.conn.execute(SEARCH.format(only=only), params)
        return with_snippets([Hit.of_row(row, self.name, row[11]) for row in rows], query)

    def passage_count(self) -> int:
        """Passages in the collection, kept by every write (counting the table scans all of it)."""
        row = self.conn.execute("SELECT value FROM settings WHERE key = 'passages'").fetchone()
        return int(row[0]) if row else self.counts()[1]

    def counts(self) -> tuple[int, int]:
        c = self.conn
        return (
            c.execute("SELECT count(*) FROM documents").fetchone()[0],
            c.execute("SELECT count(*) FROM passages").fetchone()[0],
        )


def _make(path: Path, settings: Settings) -> None:
    """A new collection's database: its tables and its settings."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
        conn.execute("BEGIN IMMEDIATE")
        for key, value in settings.as_dict().items():
            conn.execute("INSERT OR IGNORE INTO settings VALUES (?, ?)", (key, json.dumps(value)))
        conn.execute("COMMIT")
    finally:
        conn.close()


class SqliteStore:
    """Collections as SQLite files in one directory."""

    def __init__(self, directory: str | Path, query_limits: QueryLimits | None = None):
        self.directory = Path(directory)
        self.query_limits = query_limits or QueryLimits()
        if self.directory.exists() and not self.directory.is_dir():
            raise UsageError(f"the store {self.directory} is not a directory")

    def _path(self, name: str) -> Path:
        check_collection_name(name)
        return self.directory / f"{name}.sqlite"

    def names(self) -> list[str]:
        """The collections: files named NAME.sqlite with a valid name (others are not ours)."""
        try:
            return (
                sorted(p.stem for p in self.directory.glob("*.sqlite") if NAME_PATTERN.fullmatch(p.stem))
                if self.directory.is_dir()
                else []
            )
        except OSError as exc:
            raise UsageError(f"the store {self.directory} cannot be listed ({exc.strerror or exc})") from None

    def open(self, name: str) -> SqliteCollection:
        path = self._path(name)
        if not path.is_file():
            known = ", ".join(self.names()) or "none yet"
            raise UnknownCollection(
                f"no collection named '{name}' in {self.directory} (there are: {known}); make it "
                f"with `loraqa collection add {name} PATH...`"
            )
        return SqliteCollection(path, name, self.query_limits)

    def create(self, name: str, settings: Settings) -> SqliteCollection:
        path = self._path(name)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot make the store folder {self.directory} ({exc.strerror or exc})") from None
        if not path.exists():
            try:
                _make(path, settings)
            except sqlite3.Error as exc:
                raise UsageError(f"cannot make the collection {name} in {self.directory} ({exc})") from None
        return SqliteCollection(path, name, self.query_limits)

    def drop(self, name: str) -> None:
        path = self._path(name)
        self.open(name)  # refuses an unknown name
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
