"""`loraqa collection add`: files, folders (recursively) and globs into a collection.

Files are found without following directory links (documents/walk.py) and each is read and cut
into passages within its budget in a worker process (documents/budget.py); documents are then
written one by one, each in one transaction. A file read whole at the same modification time and
size before is skipped without being opened; an unchanged document is left as it is; a changed
one replaces its passages. Whatever goes wrong with one file (it cannot be read, breaks its
budget, gives a document id another file of this add already gave) is one line, and the other
files are still added: only the store itself failing stops an add. Where commits are dear
(PostgreSQL), several whole documents share a transaction (Collection.batch). The collection is made when
its first document goes in, so an add that stores nothing leaves nothing behind. With an
embedder, files are read ahead until EMBED_AHEAD passages are waiting, embedded together, and then
written as above (each document's vectors in its passages' transaction): a killed add loses at
most the read-ahead files, which a rerun reads again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from loraqa.config.schema import DocumentsConfig
from loraqa.documents import DocumentError
from loraqa.documents.budget import BudgetedReader
from loraqa.documents.document import content_id
from loraqa.documents.names import shown
from loraqa.documents.walk import Found, Walk, find_files
from loraqa.errors import UnknownCollection, UsageError
from loraqa.retrieval.embedders import Embedder, load_embedder
from loraqa.retrieval.passage_parts import PART_CHARS, embed_passages, same_vectors
from loraqa.retrieval.search import embedder_for
from loraqa.retrieval.store import Collection, Settings, Store

if TYPE_CHECKING:
    from loraqa.retrieval.ray_reading import RayReading


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
    """What a new collection records of its embedder: the model and the part size of its vectors."""
    return {"name": embedder.name, "fingerprint": embedder.fingerprint, "dim": embedder.dim, "parts": PART_CHARS}


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


@dataclass(frozen=True)
class EmbedderChoice:
    """The embedder an add was given: a model (None: the collection's own) and an engine (None:
    the default)."""

    name: str | None = None
    engine: str | None = None


# passages read ahead and embedded together: the embedder's batches stay full and of like
# lengths across small documents (one policy section or story is a single short batch alone)
EMBED_AHEAD = 256


@dataclass
class _ReadFile:
    name: str
    key: str  # the file as the collection records it
    stat: os.stat_result | None
    documents: list  # (Document, passages) still to write
    whole: bool  # every document of it was read and may be written
    vectors: list | None = None  # its passages' vectors, in order, when made where it was read


def add_paths(
    store: Store,
    name: str,
    paths: list[str] | Walk,
    settings: Settings | None = None,
    limits: DocumentsConfig | None = None,
    progress: Callable[[str], None] | None = None,
    embedder: str | EmbedderChoice | None = None,
    on_ray: RayReading | None = None,
) -> IngestReport:
    """Add every file `paths` names (or a Walk already made of them, find_files() following
    folder links if asked) to the collection `name`
    of `store`, made with `settings` (and the embedder `embedder`, a model's name or an
    EmbedderChoice: its passages get vectors) if it is new; progress(file) after each file. With `on_ray`, the files are read, cut and
    embedded by workers of a Ray cluster (retrieval/ray_reading.py) and written here, in the
    files' order, as a local add writes them."""
    walk = paths if isinstance(paths, Walk) else find_files(paths)
    report = IngestReport(files=len(walk.files), skipped=list(walk.skipped))
    collection = _existing(store, name)
    settings = collection.settings if collection is not None else (settings or Settings())
    # a collection keeps its own part size (made before parts: None, a vector a passage)
    parts = (collection.embedder_info() or {}).get("parts") if collection is not None else PART_CHARS
    choice = embedder if isinstance(embedder, EmbedderChoice) else EmbedderChoice(embedder)
    model = _embedder(collection, choice.name, choice.engine)
    adder = _Adder(store, name, settings, model, report, parts)
    adder.collection = collection
    size = max(1, (limits or DocumentsConfig()).batch_passages)
    split = (settings.passage_chars, settings.overlap)
    with ExitStack() as batch:
        adder.batch, adder.batch_size = batch, size
        if collection is not None:
            batch.enter_context(collection.batch(size))
        if on_ray is not None:
            from loraqa.retrieval.ray_reading import read_on_ray

            todo = []
            for found in walk.files:
                key, stat = adder.identify(found)
                if not adder.unchanged(key, stat):
                    todo.append((found, key, stat))
                    continue
                report.files_unchanged += 1
                if progress is not None:
                    progress(found.name)
            engine = choice.engine if model is not None else None
            reads = read_on_ray([f for f, _, _ in todo], limits, split, model, engine, parts, on_ray)
            for (found, key, stat), (documents, vectors, error) in zip(todo, reads, strict=True):
                adder.write([adder.keep(found, key, stat, documents, error, vectors)], progress)
        else:
            with BudgetedReader(limits, split=split) as reader:
                ahead: list[_ReadFile] = []
                waiting = 0  # passages read ahead, not yet written
                for found in walk.files:
                    key, stat = adder.identify(found)
                    if adder.unchanged(key, stat):
                        report.files_unchanged += 1
                        ahead.append(_ReadFile(found.name, key, None, [], False))
                    else:
                        ahead.append(adder.read(reader, found, key, stat))
                        waiting += sum(len(passages) for _, passages in ahead[-1].documents)
                    if adder.model is None or waiting >= EMBED_AHEAD:
                        adder.write(ahead, progress)
                        ahead, waiting = [], 0
                adder.write(ahead, progress)
    if adder.collection is not None:
        adder.collection.close()
    return report


class _Adder:
    """One add's state: files are read ahead, their passages embedded together, then each
    document written in its own transaction and each file recorded once all of it is in."""

    def __init__(
        self,
        store: Store,
        name: str,
        settings: Settings,
        model: Embedder | None,
        report: IngestReport,
        parts: int | None,
    ):
        self.store, self.name, self.settings, self.model, self.report = store, name, settings, model, report
        self.parts = parts  # the characters of a passage's parts, each embedded
        self.collection: Collection | None = None
        self.given: dict[str, str] = {}  # document id -> the document that gave it, in this add
        self.batch: ExitStack | None = None
        self.batch_size = 1

    @staticmethod
    def identify(found: Found) -> tuple[str, os.stat_result | None]:
        """The file as the collection records it, and its time and size (None: not readable)."""
        try:
            return shown(found.path.resolve()), found.path.stat()
        except (OSError, RuntimeError):
            return found.name, None

    def unchanged(self, key: str, stat: os.stat_result | None) -> bool:
        """Read whole before at this modification time and size: not opened again."""
        return (
            stat is not None
            and self.collection is not None
            and self.collection.file_unchanged(key, stat.st_mtime, stat.st_size)
        )

    def read(self, reader: BudgetedReader, found: Found, key: str, stat: os.stat_result | None) -> _ReadFile:
        try:
            documents, error = reader.read(found.path, found.name), None
        except DocumentError as exc:
            documents, error = [], exc.template
        return self.keep(found, key, stat, documents, error)

    def keep(
        self,
        found: Found,
        key: str,
        stat: os.stat_result | None,
        documents: list,
        error: str | None,
        vectors: list | None = None,
    ) -> _ReadFile:
        """A file as read (or the line that says why it could not be), less any document whose
        id another file of this add gave; vectors: each document's passages' vectors, made
        where it was read."""
        if error is not None:
            self.report.skipped.append((found.name, error))
            return _ReadFile(found.name, key, stat, [], False)
        kept, kept_vectors, whole = [], [], True
        for i, (doc, passages) in enumerate(documents):
            if doc.id in self.given and doc.id != content_id(doc.text):  # the same text twice is no conflict
                self.report.skipped.append(
                    (
                        doc.source,
                        f"{doc.source}: its id '{shown(doc.id)}' is already the id "
                        f"of {self.given[doc.id]} in this add; give one of them another",
                    )
                )
                whole = False
                continue
            self.given[doc.id] = doc.source
            assert passages is not None  # a reader made with split= cuts every document
            kept.append((doc, passages))
            if vectors is not None:
                kept_vectors.extend(vectors[i])
        return _ReadFile(found.name, key, stat, kept, whole, kept_vectors if vectors is not None else None)

    def write(self, files: list[_ReadFile], progress: Callable[[str], None] | None) -> None:
        texts = [p.text for f in files for _, passages in f.documents for p in passages]
        vectors = None
        if self.model is not None and texts:
            made = all(f.vectors is not None for f in files)
            vectors = (
                [v for f in files for v in (f.vectors or [])] if made else embed_passages(self.model, texts, self.parts)
            )
        at = 0
        for f in files:
            whole = f.whole
            for doc, passages in f.documents:
                collection = self._collection()
                mine = vectors[at : at + len(passages)] if vectors is not None else None
                at += len(passages)
                outcome = collection.put(doc, passages, file=f.key, vectors=mine)
                if outcome == "conflict":
                    self.report.skipped.append(
                        (
                            doc.source,
                            f"{doc.source}: its id '{shown(doc.id)}' is the id of a "
                            f"document from another file in {self.name}; remove that one "
                            "first or give this one another id",
                        )
                    )
                    whole = False
                    continue
                self.report.count(outcome)
                if outcome != "unchanged":
                    self.report.passages += len(passages)
            # a file with a refused document is read again next time, so nothing of it is lost
            if whole and f.stat is not None and self.collection is not None:
                self.collection.file_done(f.key, f.stat.st_mtime, f.stat.st_size)
            if progress is not None:
                progress(f.name)

    def _collection(self) -> Collection:
        """The collection, made when its first document goes in."""
        if self.collection is None:
            self.collection = self.store.create(self.name, self.settings)
            if self.model is not None:
                self.collection.set_embedder(embedder_info(self.model))
            assert self.batch is not None
            self.batch.enter_context(self.collection.batch(self.batch_size))
        return self.collection


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
    if info is None or (replace and not same_vectors(info, given)):
        collection.set_embedder(given)  # a new model or part size: every old vector goes
        info = given
    parts = info.get("parts")  # without --replace, a collection keeps the part size it has
    todo = collection.documents_without_vectors()
    done, ahead, waiting = 0, [], 0  # documents read ahead, embedded together (as an add does)
    for i, document_id in enumerate(todo):
        ahead.append((document_id, [p.text for p in collection.passages(document_id)]))
        waiting += len(ahead[-1][1])
        if i + 1 < len(todo) and waiting < EMBED_AHEAD:
            continue
        vectors = embed_passages(embedder, [t for _, texts in ahead for t in texts], parts)
        at = 0
        for document_id_ahead, texts in ahead:
            collection.put_vectors(document_id_ahead, vectors[at : at + len(texts)])
            at += len(texts)
            done += 1
            if progress is not None:
                progress(done, len(todo))
        ahead, waiting = [], 0
    collection.close()
    return len(todo)
