"""`loraqa collection add`: files, folders (recursively) and globs into a collection.

Files are found without following directory links (documents/walk.py) and each is read and cut
into passages within its budget in a worker process (documents/budget.py); documents are then
written one by one, each in one transaction. A file read whole at the same modification time and
size before is skipped without being opened; an unchanged document is left as it is; a changed
one replaces its passages. Whatever goes wrong with one file (it cannot be read, breaks its
budget, gives a document id another file of this add already gave) is one line, and the other
files are still added: only the store itself failing stops an add. Where commits are dear
(PostgreSQL), several whole documents share a transaction (Collection.batch). The collection is made when
its first document goes in, so an add that stores nothing leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

from loraqa.config.schema import DocumentsConfig
from loraqa.documents import DocumentError
from loraqa.documents.budget import BudgetedReader
from loraqa.documents.document import content_id
from loraqa.documents.names import shown
from loraqa.documents.walk import Walk, find_files
from loraqa.errors import UnknownCollection, UsageError
from loraqa.retrieval.embedders import Embedder, load_embedder
from loraqa.retrieval.search import embedder_for
from loraqa.retrieval.store import Collection, Settings, Store


@dataclass
class IngestReport:
    added: int = 0  # documents
    replaced: int = 0
    unchanged: int = 0
    files_unchanged: int = 0  # files read whole before, at the same time and size: not opened
    passages: int = 0  # passages written (added or replaced documents)
    files: int = 0  # files found
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why): one line each

    def count(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)


def _existing(store: Store, name: str) -> Collection | None:
    try:
        return store.open(name)
    except UnknownCollection:
        return None


def embedder_info(embedder: Embedder) -> dict:
    return {"name": embedder.name, "fingerprint": embedder.fingerprint, "dim": embedder.dim}


def _embedder(collection: Collection | None, given: str | None, engine: str | None) -> Embedder | None:
    """The embedder an add writes vectors with: the collection's own, or for a new collection the
    one given; a collection without vectors gets them from `collection embed`, not from an add."""
    info = collection.embedder_info() if collection is not None else None
    if collection is not None and info is None:
        if given:
            raise UsageError(
                f"the collection {collection.name} has no vectors; add them to all of it with `loraqa "
                f"collection embed {collection.name} --embedder {given}`, then add files"
            )
        return None
    if collection is not None and info is not None:
        return embedder_for(collection, given, engine)
    return load_embedder(given, engine) if given else None


def add_paths(
    store: Store,
    name: str,
    paths: list[str] | Walk,
    settings: Settings | None = None,
    limits: DocumentsConfig | None = None,
    progress: Callable[[str], None] | None = None,
    embedder: str | None = None,
    embedder_engine: str | None = None,
) -> IngestReport:
    """Add every file `paths` names (or a Walk already made of them, find_files() following
    folder links if asked) to the collection `name`
    of `store`, made with `settings` (and the embedder `embedder`: its passages get vectors) if
    it is new; progress(file) after each file."""
    walk = paths if isinstance(paths, Walk) else find_files(paths)
    report = IngestReport(files=len(walk.files), skipped=list(walk.skipped))
    collection = _existing(store, name)
    settings = collection.settings if collection is not None else (settings or Settings())
    model = _embedder(collection, embedder, embedder_engine)
    given: dict[str, str] = {}  # document id -> the document that gave it, in this add
    size = max(1, (limits or DocumentsConfig()).batch_passages)
    with BudgetedReader(limits, split=(settings.passage_chars, settings.overlap)) as reader, ExitStack() as batch:
        if collection is not None:
            batch.enter_context(collection.batch(size))
        for found in walk.files:
            try:
                stat = found.path.stat()
                key = shown(found.path.resolve())
            except (OSError, RuntimeError):
                stat, key = None, found.name
            if (
                stat is not None
                and collection is not None
                and collection.file_unchanged(key, stat.st_mtime, stat.st_size)
            ):
                report.files_unchanged += 1
            else:
                try:
                    documents = reader.read(found.path, found.name)
                except DocumentError as exc:
                    report.skipped.append((found.name, exc.template))
                    documents = None
                whole = documents is not None
                for doc, passages in documents or ():
                    if doc.id in given and doc.id != content_id(doc.text):  # the same text twice is no conflict
                        report.skipped.append(
                            (
                                doc.source,
                                f"{doc.source}: its id '{shown(doc.id)}' is already the id "
                                f"of {given[doc.id]} in this add; give one of them another",
                            )
                        )
                        whole = False
                        continue
                    given[doc.id] = doc.source
                    assert passages is not None  # a reader made with split= cuts every document
                    if collection is None:
                        collection = store.create(name, settings)
                        if model is not None:
                            collection.set_embedder(embedder_info(model))
                        batch.enter_context(collection.batch(size))
                    vectors = model.embed([p.text for p in passages]) if model is not None else None
                    outcome = collection.put(doc, passages, file=key, vectors=vectors)
                    if outcome == "conflict":
                        report.skipped.append(
                            (
                                doc.source,
                                f"{doc.source}: its id '{shown(doc.id)}' is the id of a "
                                f"document from another file in {name}; remove that one "
                                "first or give this one another id",
                            )
                        )
                        whole = False
                        continue
                    report.count(outcome)
                    if outcome != "unchanged":
                        report.passages += len(passages)
                # a file with a refused document is read again next time, so nothing of it is lost
                if whole and stat is not None and collection is not None:
                    collection.file_done(key, stat.st_mtime, stat.st_size)
            if progress is not None:
                progress(found.name)
    if collection is not None:
        collection.close()
    return report


def embed_collection(
    collection: Collection,
    embedder: Embedder,
    replace: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Vectors for every passage of the collection that has none, a document per transaction (a
    killed run keeps what it did; running it again finishes the rest). A collection embedded with
    another model is refused unless `replace` (then every vector is made again). Returns the
    documents embedded."""
    info, given = collection.embedder_info(), embedder_info(embedder)
    if info is not None and info["fingerprint"] != given["fingerprint"] and not replace:
        raise UsageError(
            f"the collection {collection.name} is embedded with {info['name']}; --replace makes every "
            f"vector again with {embedder.name}"
        )
    if info is None or info["fingerprint"] != given["fingerprint"]:
        collection.set_embedder(given)  # a new model: every old vector goes
    todo = collection.documents_without_vectors()
    for n, document_id in enumerate(todo, 1):
        passages = collection.passages(document_id)
        collection.put_vectors(document_id, embedder.embed([p.text for p in passages]))
        if progress is not None:
            progress(n, len(todo))
    collection.close()
    return len(todo)
