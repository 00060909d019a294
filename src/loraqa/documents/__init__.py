"""Documents: files of any supported format read into one text each, and that text cut into
passages that know where they came from.

readers (formats.py): PDF (pypdf, text per page), DOCX (python-docx, headings kept), HTML (the
main text, by trafilatura), Markdown, plain text, JSONL (`text` and optional `id`, `title`, `url`,
metadata) and SQuAD JSON (each context a document, its article's title kept) -> a Document
(document.py: id, source, title, text, page starts, headings, modification time) -> passages
(passages.py: pieces cut at paragraph and heading boundaries, each with its document, page and
character offsets in the document's text).

Untrusted files: walk.py finds them without following directory links (names escaped by
names.py), budget.py reads each in a worker process (worker.py) held to a memory and time
budget (documents.* settings), so one hostile file costs at most its budget and one line.
"""

from loraqa.documents.document import Document, DocumentError
from loraqa.documents.formats import SUFFIXES, read_path
from loraqa.documents.passages import Passage, split_document

__all__ = ["SUFFIXES", "Document", "DocumentError", "Passage", "read_path", "split_document"]
