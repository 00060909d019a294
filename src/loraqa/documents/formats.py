"""Reading files into documents, one reader per format, chosen by the file's suffix.

Each reader returns the file's documents (JSONL and SQuAD files hold many) or raises a
DocumentError naming the file and what is wrong with it: encrypted or corrupt, no text layer,
empty, binary behind a text suffix, an unknown suffix, too large. The libraries that do the
reading are the well-kept ones for each format (pypdf, python-docx, trafilatura), loaded only
when a file of theirs comes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from loraqa import optional
from loraqa.data.squad_format import is_official
from loraqa.documents.document import Document, DocumentError
from loraqa.errors import option

TEXT_SUFFIXES = (".txt", ".text")
MARKDOWN_SUFFIXES = (".md", ".markdown")
HTML_SUFFIXES = (".html", ".htm")
SUFFIXES = (".pdf", ".docx", *HTML_SUFFIXES, *MARKDOWN_SUFFIXES, *TEXT_SUFFIXES, ".jsonl", ".json")
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)


def read_path(path: str | Path, max_file_mb: float = 50) -> list[Document]:
    """The documents in one file."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise DocumentError(f"{p}: unsupported file type '{suffix or 'no suffix'}' (loraqa reads "
                            f"{', '.join(SUFFIXES)})")
    try:
        size = p.stat().st_size
        if size > max_file_mb * 2**20:
            raise DocumentError(f"{p}: {size / 2**20:.1f} MB, over the limit of {max_file_mb:g} MB "
                                f"({option('max_file_mb')})")
        if not p.is_file():
            raise DocumentError(f"{p}: not a regular file")
        data = p.read_bytes()
    except OSError as exc:
        raise DocumentError(f"{p}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if not data.strip():
        raise DocumentError(f"{p}: the file is empty")
    modified = p.stat().st_mtime
    if suffix == ".pdf":
        docs = [read_pdf(p, data)]
    elif suffix == ".docx":
        docs = [read_docx(p, data)]
    elif suffix in HTML_SUFFIXES:
        docs = [read_html(p, data)]
    elif suffix == ".jsonl":
        docs = read_jsonl(p, _text(p, data))
    elif suffix == ".json":
        docs = read_squad(p, _text(p, data))
    else:
        docs = [read_markdown(p, _text(p, data)) if suffix in MARKDOWN_SUFFIXES else
                Document(str(p), p.stem, _clean(_text(p, data)))]
    for doc in docs:
        doc.modified = modified
        if not doc.text.strip():
            raise DocumentError(f"{doc.source}: no text in it")
    return docs


def _text(p: Path, data: bytes) -> str:
    """The bytes of a text format as text; binary content behind a text suffix is refused."""
    if b"\x00" in data[:8192]:
        raise DocumentError(f"{p}: binary content, not text (is the suffix right?)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{p}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def _clean(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


def _title(text: str, fallback: str) -> str:
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first[:200] if 0 < len(first) <= 200 else fallback


def read_pdf(p: Path, data: bytes) -> Document:
    pypdf = optional.require("pypdf", f"reading {p}")
    import io

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError(f"{p}: the PDF is encrypted; save a decrypted copy and add that")
        pages = [_clean(page.extract_text() or "").strip() for page in reader.pages]
    except DocumentError:
        raise
    except Exception as exc:  # noqa: BLE001 - pypdf raises many types for damaged files
        raise DocumentError(f"{p}: not a readable PDF ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})") from None
    if not any(pages):
        raise DocumentError(f"{p}: the PDF has no text layer (scanned pages need OCR first, e.g. ocrmypdf)")
    text, starts = "", []
    for page in pages:
        if text:
            text += "\n\n"
        starts.append(len(text))
        text += page
    meta_title = (reader.metadata.title if reader.metadata and reader.metadata.title else "") or ""
    return Document(str(p), meta_title.strip() or _title(text, p.stem), text, page_starts=starts)


def read_docx(p: Path, data: bytes) -> Document:
    docx = optional.require("docx", f"reading {p}")
    import io

    try:
        doc = docx.Document(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - a damaged archive raises several types
        raise DocumentError(f"{p}: not a readable DOCX ({type(exc).__name__})") from None
    headings, text = [], ""
    body = doc.element.body
    for child in body.iterchildren():
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "p":
            para = docx.text.paragraph.Paragraph(child, doc)
            content = para.text.strip()
            style = (para.style.name if para.style is not None else "") or ""
            is_heading = style.startswith("Heading") or style == "Title"
        elif tag == "tbl":
            table = docx.table.Table(child, doc)
            content = "\n".join(" | ".join(cell.text.strip() for cell in row.cells) for row in table.rows).strip()
            is_heading = False
        else:
            continue
        if not content:
            continue
        if text:
            text += "\n\n"
        if is_heading:
            headings.append((len(text), content))
        text += content
    title = (doc.core_properties.title or "").strip() or (headings[0][1] if headings else p.stem)
    return Document(str(p), title, _clean(text), headings=headings)


def read_html(p: Path, data: bytes) -> Document:
    trafilatura = optional.require("trafilatura", f"reading {p}")
    text = trafilatura.extract(data, output_format="txt", include_comments=False, include_tables=True,
                               favor_recall=True)
    if not text or not text.strip():
        raise DocumentError(f"{p}: no main text found in the page")
    meta = trafilatura.extract_metadata(data)
    title = (meta.title if meta and meta.title else "") or p.stem
    # trafilatura ends each paragraph with one line break; passages are cut at blank lines
    return Document(str(p), title.strip(), "\n\n".join(line.strip() for line in _clean(text).split("\n")
                                                        if line.strip()))


def read_markdown(p: Path, text: str) -> Document:
    text = _clean(text)
    found = list(_MD_HEADING.finditer(text))
    top = next((m.group(2) for m in found if len(m.group(1)) == 1), None)
    return Document(str(p), top or (found[0].group(2) if found else p.stem), text,
                    headings=[(m.start(), m.group(2)) for m in found])


def read_jsonl(p: Path, text: str) -> list[Document]:
    docs = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise DocumentError(f"{p} line {n}: not JSON; each line must be an object with a 'text'") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip():
            raise DocumentError(f"{p} line {n}: no 'text' (a non-empty string)")
        meta = {k: v for k, v in row.items() if k not in ("text", "id", "title")}
        given = row.get("id")
        docs.append(Document(f"{p}:{n}", str(row.get("title") or f"{p.stem} {n}"), _clean(row["text"]),
                             id=str(given) if given is not None else "", metadata=meta))
    if not docs:
        raise DocumentError(f"{p}: holds no rows")
    return docs


def read_squad(p: Path, text: str) -> list[Document]:
    try:
        data = json.loads(text)
    except ValueError:
        raise DocumentError(f"{p}: not valid JSON") from None
    if not is_official(data):
        raise DocumentError(f"{p}: not SQuAD JSON ({{\"data\": [{{\"title\", \"paragraphs\": [{{\"context\"}}]}}]}}); "
                            "for your own documents use JSONL with a 'text' field")
    docs, seen = [], set()
    for article in data["data"]:
        for paragraph in article.get("paragraphs", []):
            context = _clean(paragraph.get("context") or "")
            if context.strip() and context not in seen:  # questions repeat their passage
                seen.add(context)
                docs.append(Document(f"{p}#{len(docs) + 1}", str(article.get("title") or p.stem), context))
    if not docs:
        raise DocumentError(f"{p}: holds no contexts")
    return docs
