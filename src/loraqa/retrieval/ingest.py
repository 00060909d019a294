"""`loraqa collection add`: files, folders (recursively) and globs into a collection.

Each file is read (documents/), cut into passages and written document by document, each in one
transaction. A file read whole at the same modification time and size before is skipped without
being opened; an unchanged document is left as it is; a changed one replaces its passages. A
file that cannot be read is reported with its reason and the others are still added.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from loraqa.documents import SUFFIXES, DocumentError, read_path, split_document
from loraqa.errors import UsageError
from loraqa.retrieval.store import Collection


@dataclass
class IngestReport:
    added: int = 0  # documents
    replaced: int = 0
    unchanged: int = 0
    files_unchanged: int = 0  # files read whole before, at the same time and size: not opened
    passages: int = 0  # passages written (added or replaced documents)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)

    def count(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)


def expand(paths: list[str]) -> list[Path]:
    """Every file the arguments name: files as given, folders recursively (supported suffixes,
    hidden entries left out), globs expanded; each once, in a stable order."""
    found: list[Path] = []
    for given in paths:
        matches = [Path(m) for m in sorted(glob.glob(given, recursive=True))] if glob.has_magic(given) else [Path(given)]
        if not matches:
            raise UsageError(f"no file matches '{given}'")
        for path in matches:
            if path.is_dir():
                found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
                                and not any(part.startswith(".") for part in p.relative_to(path).parts))
            else:
                found.append(path)  # a missing or unsupported file is reported when it is read
    return list(dict.fromkeys(found))


def add_paths(collection: Collection, paths: list[str], max_file_mb: float = 50,
              progress: Callable[[str], None] | None = None) -> IngestReport:
    """Add every file of `paths`; progress(file) after each."""
    report = IngestReport()
    settings = collection.settings
    for path in expand(paths):
        key = str(path.resolve()) if path.exists() else str(path)
        try:
            stat = path.stat()
        except OSError:
            stat = None
        if stat is not None and collection.file_unchanged(key, stat.st_mtime, stat.st_size):
            report.files_unchanged += 1
        else:
            try:
                documents = read_path(path, max_file_mb)
            except DocumentError as exc:
                report.skipped.append((str(path), exc.template))
            else:
                for doc in documents:
                    passages = split_document(doc, settings.passage_chars, settings.overlap)
                    outcome = collection.put(doc, passages, file=key)
                    report.count(outcome)
                    if outcome != "unchanged":
                        report.passages += len(passages)
                collection.file_done(key, stat.st_mtime, stat.st_size)
        if progress is not None:
            progress(str(path))
    return report
