"""Reading files into documents, one reader per format, chosen by the file's suffix.

Each reader returns the file's documents (JSONL and SQuAD files hold many) or raises a
DocumentError naming the file and what is wrong with it: encrypted or corrupt, no text layer,
empty, binary behind a text suffix, an unknown suffix, too large, an archive that would unpack
to too much, JSON of the wrong shape. The libraries that do the reading are the well-kept ones
for each format (pypdf, python-docx, trafilatura), loaded only when a file of theirs comes.

These readers trust nothing in the file, but they run in the process that calls them: a file no
check foresaw can still cost memory and time. `collection add` and `synth --input` read files
through documents/budget.py, which runs these readers in a worker process held to a budget.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from loraqa import optional
from loraqa.config.schema import DocumentsConfig
from loraqa.documents.document import Document, DocumentError
from loraqa.documents.names import one_line, shown, storable, storable_value
from loraqa.errors import option

TEXT_SUFFIXES = (".txt", ".text")
MARKDOWN_SUFFIXES = (".md", ".markdown")
HTML_SUFFIXES = (".html", ".htm")
SUFFIXES = (".pdf", ".docx", *HTML_SUFFIXES, *MARKDOWN_SUFFIXES, *TEXT_SUFFIXES, ".jsonl", ".json")
MB = 2**20
# An archive this small cannot be a bomb whatever its ratio (DOCX XML often packs 10-50:1).
RATIO_FLOOR_BYTES = 1 * MB


def read_path(
    path: str | Path, max_file_mb: float | None = None, limits: DocumentsConfig | None = None, name: str | None = None
) -> list[Document]:
    """The documents in one file. limits: the size checks (max_file_mb overrides its own);
    name: how the file is named in documents' sources and in errors (default: the path, with
    unprintable characters escaped)."""
    p = Path(path)
    limits = limits or DocumentsConfig()
    max_mb = limits.max_file_mb if max_file_mb is None else max_file_mb
    name = name or shown(p)
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise DocumentError(
            f"{name}: unsupported file type '{shown(suffix) or 'no suffix'}' (loraqa reads {', '.join(SUFFIXES)})"
        )
    try:
        size = p.stat().st_size
        if not p.is_file():
            raise DocumentError(f"{name}: not a regular file")
        if size > max_mb * MB:
            raise DocumentError(
                f"{name}: {size / MB:.1f} MB, over the limit of {max_mb:g} MB ({option('max_file_mb')})"
            )
        data = p.read_bytes()
        modified = p.stat().st_mtime
    except OSError as exc:
        raise DocumentError(f"{name}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if not data or data.isspace():  # isspace: no copy of a large file
        raise DocumentError(f"{name}: the file is empty")
    stem = shown(p.stem)
    if suffix == ".pdf":
        docs = [read_pdf(name, stem, data)]
    elif suffix == ".docx":
        docs = [read_docx(name, stem, data, limits)]
    elif suffix in HTML_SUFFIXES:
        docs = [read_html(name, stem, data, limits)]
    elif suffix == ".jsonl":
        docs = read_jsonl(name, stem, _text(name, data))
    elif suffix == ".json":
        docs = read_squad(name, stem, _text(name, data))
    elif suffix in MARKDOWN_SUFFIXES:
        docs = [read_markdown(name, stem, _text(name, data))]
    else:
        docs = [Document(name, stem, _clean(_text(name, data)))]
    for doc in docs:
        doc.modified = modified
        if not doc.text.strip():
            raise DocumentError(f"{doc.source}: no text in it")
    return docs


def _text(name: str, data: bytes) -> str:
    """The bytes of a text format as text; binary content behind a text suffix is refused."""
    if b"\x00" in data[:8192]:
        raise DocumentError(f"{name}: binary content, not text (is the suffix right?)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{name}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def _clean(text: str) -> str:
    return storable(text.replace("\r\n", "\n").replace("\r", "\n"))


def _title(text: str, fallback: str) -> str:
    for line in text.split("\n", 50)[:50]:  # the first non-empty line, without splitting the whole text
        if line.strip():
            first = one_line(line)
            return first if 0 < len(first) <= 200 else fallback
    return fallback


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:120] if str(exc).strip() else type(exc).__name__


def read_pdf(name: str, stem: str, data: bytes) -> Document:
    pypdf = optional.require("pypdf", f"reading {name}")
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError(f"{name}: the PDF is encrypted; save a decrypted copy and add that")
        pages = [_clean(page.extract_text() or "").strip() for page in reader.pages]
        meta_title = (reader.metadata.title if reader.metadata and reader.metadata.title else "") or ""
    except DocumentError:
        raise
    except RecursionError:
        raise DocumentError(f"{name}: not a readable PDF (its objects nest too deeply)") from None
    except Exception as exc:  # noqa: BLE001 - pypdf raises many types for damaged files
        raise DocumentError(f"{name}: not a readable PDF ({_first_line(exc)})") from None
    if not any(pages):
        raise DocumentError(f"{name}: the PDF has no text layer (scanned pages need OCR first, e.g. ocrmypdf)")
    text, starts = "", []
    for page in pages:
        if text:
            text += "\n\n"
        starts.append(len(text))
        text += page
    return Document(name, one_line(str(meta_title))[:200] or _title(text, stem), text, page_starts=starts)


def check_archive(name: str, data: bytes, limits: DocumentsConfig, what: str = "DOCX") -> None:
    """Refuse an archive whose parts would unpack to too much, before anything unpacks them.
    The sizes are the archive's own claims, and they bind: Python's zipfile (which python-docx
    reads with) stops each part at its declared size."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            parts = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DocumentError(f"{name}: not a readable {what} ({_first_line(exc)})") from None
    unpacked = sum(p.file_size for p in parts)
    packed = max(1, sum(p.compress_size for p in parts))
    if unpacked > limits.max_archive_mb * MB:
        raise DocumentError(
            f"{name}: the {what} would unpack to {unpacked / MB:,.0f} MB, over the limit of "
            f"{limits.max_archive_mb:g} MB (documents.max_archive_mb)"
        )
    if unpacked > RATIO_FLOOR_BYTES and unpacked / packed > limits.max_archive_ratio:
        raise DocumentError(
            f"{name}: the {what} would unpack to {unpacked / packed:,.0f} times its size, over "
            f"the limit of {limits.max_archive_ratio:g}:1 (documents.max_archive_ratio; "
            "a zip bomb?)"
        )


def read_docx(name: str, stem: str, data: bytes, limits: DocumentsConfig | None = None) -> Document:
    docx = optional.require("docx", f"reading {name}")
    check_archive(name, data, limits or DocumentsConfig())
    try:
        doc = docx.Document(io.BytesIO(data))
        headings, text = [], ""
        for child in doc.element.body.iterchildren():
            tag = child.tag.rsplit("}", 1)[-1] if isinstance(child.tag, str) else ""
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
                headings.append((len(text), one_line(content)[:200]))
            text += content
        title = one_line(doc.core_properties.title or "")[:200] or (headings[0][1] if headings else stem)
    except DocumentError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged archive or part raises several types
        raise DocumentError(f"{name}: not a readable DOCX ({type(exc).__name__})") from None
    return Document(name, title, _clean(text), headings=headings)


def read_html(name: str, stem: str, data: bytes, limits: DocumentsConfig | None = None) -> Document:
    limits = limits or DocumentsConfig()
    if len(data) > limits.max_html_mb * MB:
        raise DocumentError(
            f"{name}: an HTML page of {len(data) / MB:.1f} MB, over the limit of "
            f"{limits.max_html_mb:g} MB (documents.max_html_mb)"
        )
    trafilatura = optional.require("trafilatura", f"reading {name}")
    try:
        text = trafilatura.extract(
            data, output_format="txt", include_comments=False, include_tables=True, favor_recall=True
        )
        meta = trafilatura.extract_metadata(data) if text else None
    except RecursionError:
        raise DocumentError(f"{name}: not a readable page (its elements nest too deeply)") from None
    except (ValueError, TypeError, LookupError) as exc:  # markup or an encoding lxml cannot take
        raise DocumentError(f"{name}: not a readable page ({_first_line(exc)})") from None
    if not text or not text.strip():
        raise DocumentError(f"{name}: no main text found in the page")
    title = one_line(meta.title if meta and meta.title else "")[:200] or stem
    # trafilatura ends each paragraph with one line break; passages are cut at blank lines
    return Document(name, title, "\n\n".join(line.strip() for line in _clean(text).split("\n") if line.strip()))


def markdown_headings(text: str) -> list[tuple[int, int, str]]:
    """(offset, level, heading) of each ATX heading ('# Title', '## Part ##'), read line by line
    in linear time (a regular expression with optional closing hashes backtracks cubically on a
    line of spaces and hashes)."""
    found, at = [], 0
    for line in text.split("\n"):
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            if level <= 6 and line[level : level + 1] in (" ", "\t"):
                heading = line[level:].strip()
                closed = heading.rstrip("#")
                if closed != heading and (not closed or closed[-1] in " \t"):  # a closing run of hashes
                    heading = closed.rstrip()
                heading = one_line(heading)[:200]
                if heading:
                    found.append((at, level, heading))
        at += len(line) + 1
    return found


def read_markdown(name: str, stem: str, text: str) -> Document:
    text = _clean(text)
    found = markdown_headings(text)
    top = next((h for _, level, h in found if level == 1), None)
    return Document(name, top or (found[0][2] if found else stem), text, headings=[(at, h) for at, _, h in found])


def _json(name: str, text: str, where: str = ""):
    try:
        return json.loads(text)
    except RecursionError:
        raise DocumentError(f"{name}{where}: JSON nested too deeply") from None
    except ValueError:
        raise DocumentError(f"{name}{where}: not valid JSON") from None


def read_jsonl(name: str, stem: str, text: str) -> list[Document]:
    docs = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f" line {n}"
        row = _json(name, line, where)
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip():
            raise DocumentError(f"{name}{where}: no 'text' (a non-empty string)")
        given, title = row.get("id"), row.get("title")
        if given is not None and (isinstance(given, bool) or not isinstance(given, (str, int))):
            raise DocumentError(f"{name}{where}: 'id' must be a string or a whole number")
        if title is not None and not isinstance(title, str):
            raise DocumentError(f"{name}{where}: 'title' must be a string")
        meta = storable_value({k: v for k, v in row.items() if k not in ("text", "id", "title")})
        docs.append(
            Document(
                f"{name}:{n}",
                one_line(title or "")[:200] or f"{stem} {n}",
                _clean(row["text"]),
                id=storable(str(given)) if given is not None else "",
                metadata=meta,
            )
        )
    if not docs:
        raise DocumentError(f"{name}: holds no rows")
    return docs


def read_squad(name: str, stem: str, text: str) -> list[Document]:
    data = _json(name, text)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DocumentError(
            f'{name}: not SQuAD JSON ({{"data": [{{"title", "paragraphs": [{{"context"}}]}}]}}); '
            "for your own documents use JSONL with a 'text' field"
        )
    docs: list[Document] = []
    seen: set[str] = set()
    for a, article in enumerate(data["data"], 1):
        paragraphs = article.get("paragraphs", []) if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise DocumentError(f"{name}: article {a} is not an object with a list of 'paragraphs'")
        title = article.get("title")
        for paragraph in paragraphs:
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            if context is not None and not isinstance(context, str):
                raise DocumentError(f"{name}: article {a} has a 'context' that is not a string")
            context = _clean(context or "")
            if context.strip() and context not in seen:  # questions repeat their passage
                seen.add(context)
                docs.append(
                    Document(
                        f"{name}#{len(docs) + 1}",
                        one_line(title if isinstance(title, str) else "")[:200] or stem,
                        context,
                    )
                )
    if not docs:
        raise DocumentError(f"{name}: holds no contexts")
    return docs
