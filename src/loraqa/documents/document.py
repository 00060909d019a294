"""A document as loraqa keeps it: one text, with where its pages and headings start."""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field

from loraqa.errors import LoraqaError


class DocumentError(LoraqaError):
    """A file that cannot be read as a document; the message names the file and the reason."""

    remedy = "Fix or convert the file (a PDF needs a text layer; an encrypted one, its password removed); the rest of the add goes on without it."


def content_id(text: str) -> str:
    """A stable id from the text alone: the same text always gets the same id."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class Document:
    source: str  # the file (or file and line) it came from
    title: str
    text: str
    id: str = ""  # the content hash unless the source gives one
    page_starts: list[int] = field(default_factory=list)  # character offset where each page starts (PDF)
    headings: list[tuple[int, str]] = field(default_factory=list)  # (offset, heading) in reading order
    modified: float | None = None  # the source file's modification time
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.id = self.id or content_id(self.text)

    @property
    def content_hash(self) -> str:
        return content_id(self.text)

    def page_at(self, offset: int) -> int | None:
        """The 1-based page holding the character at `offset`, for documents with pages."""
        if not self.page_starts:
            return None
        return bisect.bisect_right(self.page_starts, offset)
