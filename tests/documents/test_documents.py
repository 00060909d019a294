"""Reading documents: PDF, DOCX and HTML files written here by the libraries that make them,
Markdown, text, JSONL and SQuAD; and cutting them into passages that point back into them."""

from __future__ import annotations

import itertools
import json
import os

import pytest

from documents_made_here import PAGE, write_docx, write_pdf
from helpers import SQUAD_V1


def test_a_pdf_is_read_page_by_page(tmp_path):
    from loraqa.documents import read_path

    path = write_pdf(tmp_path / "letter.pdf", ["Patient: Jane Roe\nDiagnosis: asthma", "Dose: 5 mg salbutamol daily"])
    [doc] = read_path(path)
    assert doc.title == "Discharge letter" and len(doc.page_starts) == 2
    at = doc.text.index("5 mg salbutamol")
    assert doc.page_at(at) == 2 and doc.page_at(doc.text.index("asthma")) == 1
    assert doc.modified == pytest.approx(os.path.getmtime(path))


def test_a_docx_keeps_its_headings_and_tables(tmp_path):
    from loraqa.documents import read_path, split_document

    [doc] = read_path(write_docx(tmp_path / "policy.docx"))
    assert doc.title == "Leave policy" and [h for _, h in doc.headings] == ["Annual leave", "Sick leave"]
    assert "Senior | 30" in doc.text
    passages = split_document(doc, max_chars=1000, overlap=0)
    assert [p.heading for p in passages] == ["Annual leave", "Sick leave"]  # a heading starts a passage
    assert "doctor's note" in passages[1].text and "25 days" not in passages[1].text


def test_html_gives_its_main_text_without_the_page_furniture(tmp_path):
    from loraqa.documents import read_path

    (tmp_path / "notes.html").write_text(PAGE)
    [doc] = read_path(tmp_path / "notes.html")
    assert doc.title == "Photosynthesis"  # trafilatura takes the article's own heading over <title>
    assert "chloroplasts" in doc.text and "Calvin cycle" in doc.text
    assert "Log in" not in doc.text and "All rights reserved" not in doc.text


def test_markdown_text_jsonl_and_squad(tmp_path):
    from loraqa.documents import read_path

    (tmp_path / "guide.md").write_text("# Triage guide\n\nRed means now.\n\n## Yellow\n\nWithin an hour.\n")
    (tmp_path / "memo.txt").write_text("The office closes at five on Fridays.\n")
    (tmp_path / "kb.jsonl").write_text(
        json.dumps({"id": "kb-1", "text": "Reset the router first.", "title": "Wi-Fi", "url": "https://kb.example/1"})
        + "\n"
        + json.dumps({"text": "Call IT on 555."})
        + "\n"
    )
    [md] = read_path(tmp_path / "guide.md")
    assert md.title == "Triage guide" and [h for _, h in md.headings] == ["Triage guide", "Yellow"]
    [txt] = read_path(tmp_path / "memo.txt")
    assert txt.title == "memo" and "five on Fridays" in txt.text
    first, second = read_path(tmp_path / "kb.jsonl")
    assert first.id == "kb-1" and first.title == "Wi-Fi" and first.metadata == {"url": "https://kb.example/1"}
    assert second.id and second.source.endswith("kb.jsonl:2")
    squad = read_path(SQUAD_V1)
    contexts = {p["context"] for a in json.loads(SQUAD_V1.read_text())["data"] for p in a["paragraphs"]}
    assert {d.text for d in squad} == contexts and {"Insulin", "Paris"} <= {d.title for d in squad}


def test_the_same_text_gets_the_same_id(tmp_path):
    from loraqa.documents import read_path

    (tmp_path / "a.txt").write_text("Same words.")
    (tmp_path / "b.txt").write_text("Same words.")
    assert read_path(tmp_path / "a.txt")[0].id == read_path(tmp_path / "b.txt")[0].id


@pytest.mark.parametrize(
    "case,message",
    [
        ("encrypted.pdf", "the PDF is encrypted"),
        ("corrupt.pdf", "not a readable PDF"),
        ("scanned.pdf", "no text layer (scanned pages need OCR first"),
        ("empty.txt", "the file is empty"),
        ("binary.txt", "binary content, not text"),
        ("latin1.md", "not UTF-8 text"),
        ("data.xyz", "unsupported file type '.xyz'"),
        ("big.txt", "over the limit of 0.001 MB (max_file_mb=)"),
        ("fifo.txt", "not a regular file"),
        ("gone.txt", "cannot be read"),
        ("broken.docx", "not a readable DOCX"),
        ("nothing.html", "no main text found"),
        ("rows.jsonl", "line 2: no 'text'"),
        ("other.json", "not SQuAD JSON"),
    ],
)
def test_a_file_that_cannot_be_read_says_why(tmp_path, case, message):
    from loraqa.documents import DocumentError, read_path

    path = tmp_path / case
    if case == "encrypted.pdf":
        write_pdf(path, ["secret text"], encrypt="s3cret")
    elif case == "scanned.pdf":
        write_pdf(path, ["x"], text=False)
    elif case == "fifo.txt":
        os.mkfifo(path)
    elif case == "gone.txt":
        path.symlink_to(tmp_path / "missing.txt")
    else:
        path.write_bytes(
            {
                "corrupt.pdf": b"%PDF-1.4 this is not a pdf",
                "empty.txt": b"  \n",
                "binary.txt": b"ab\x00\x01cd",
                "latin1.md": "caf\xe9".encode("latin-1"),
                "data.xyz": b"x",
                "big.txt": b"x" * 2000,
                "broken.docx": b"PK not a zip",
                "nothing.html": b"<html><head><title>x</title></head><body><script>var a = 1;</script></body></html>",
                "rows.jsonl": b'{"text": "ok"}\n{"title": "no text"}\n',
                "other.json": b'{"rows": []}',
            }[case]
        )
    with pytest.raises(DocumentError) as info:
        read_path(path, max_file_mb=0.001 if case == "big.txt" else 50)
    assert message in str(info.value) and str(path) in str(info.value)


def test_passages_cover_the_document_and_point_into_it():
    from loraqa.documents import Document, split_document

    paragraphs = [
        " ".join(f"Sentence {i}.{j} says something about item {i * 10 + j}." for j in range(i % 7 + 1))
        for i in range(40)
    ]
    text = "\n\n".join(paragraphs) + "\n\n" + "word " * 700  # and one paragraph with no sentence end
    doc = Document("d.txt", "d", text)
    passages = split_document(doc, max_chars=400, overlap=100)
    assert all(p.text == text[p.start : p.end] and len(p.text) <= 400 for p in passages)
    covered = set()
    for p in passages:
        covered.update(range(p.start, p.end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())  # no text is skipped
    shared = [max(0, a.end - b.start) for a, b in itertools.pairwise(passages)]
    assert max(shared) <= 100 and sum(1 for s in shared if s) > len(shared) // 2  # neighbours overlap
