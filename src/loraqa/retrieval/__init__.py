"""Retrieval: collections of documents and their passages, in a store, searched by BM25.

store.py is the interface every backend implements: SQLite (sqlite.py, the embedded default: a
directory of databases) and PostgreSQL (postgres.py, one database many server replicas share);
more can follow behind the same interface. ingest.py adds files and folders to a collection.
"""

from __future__ import annotations

from pathlib import Path

from loraqa.retrieval.store import Collection, Hit, QueryLimits, Settings, Store

DEFAULT_STORE = "collections"

__all__ = ["DEFAULT_STORE", "Collection", "Hit", "QueryLimits", "Settings", "Store", "open_store"]


def open_store(spec: str | Path | None = None, query_limits: QueryLimits | None = None) -> Store:
    """The store of collections at `spec`.

    Args:
        spec: A `postgresql://` URL, or a directory of SQLite collections (default `collections/`).
        query_limits: What one search may ask (default: 1,000 characters, 100 words).

    Returns:
        The Store: its collections are opened, created and dropped by name.

    Raises:
        LoraqaError: A PostgreSQL server that cannot be reached, psycopg not installed.
    """
    if isinstance(spec, str) and spec.startswith(("postgresql://", "postgres://")):
        from loraqa.retrieval.postgres import PostgresStore  # psycopg only for a PostgreSQL store

        return PostgresStore(spec, query_limits)
    from loraqa.retrieval.sqlite import SqliteStore  # loaded with the first store opened, not with the package

    return SqliteStore(spec or DEFAULT_STORE, query_limits)
