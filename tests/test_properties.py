"""Property-based tests (Hypothesis) over what reads untrusted input: the document readers, the
passage cutter, the query parser, the span locator and the review importer. Whatever the input,
each either gives a well-formed result or one of loraqa's own errors (one line for the user),
never another exception (a traceback for the user)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loraqa.errors import LoraqaError

# LORAQA_HYPOTHESIS_EXAMPLES=3000 for a longer hunt than the suite's
SETTINGS = settings(
    max_examples=int(os.environ.get("LORAQA_HYPOTHESIS_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# text made of the characters that matter to the parsers: breaks, heading and sentence marks, JSON
# punctuation, controls, a surrogate, and letters
MARKUP = st.text(alphabet=st.sampled_from(list('ab #.!?:;\n\t\r{}[]",0\\\x00\x1b\u2028é') + ["\ud800"]), max_size=400)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | MARKUP,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(MARKUP, inner, max_size=4),
    max_leaves=20,
)


@SETTINGS
@given(
    content=st.one_of(MARKUP, st.binary(max_size=300), JSON_VALUES.map(json.dumps)),
    suffix=st.sampled_from([".md", ".txt", ".jsonl", ".json"]),
)
def test_a_reader_gives_documents_or_one_line(content, suffix):
    from loraqa.documents import read_path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"f{suffix}"
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
        try:
            docs = read_path(path)
        except LoraqaError as exc:
            assert "\n" not in str(exc)
            return
    for doc in docs:
        assert doc.text.strip() and doc.source.startswith(str(path))
        doc.text.encode("utf-8")  # storable: no lone surrogate, no NUL
        assert "\x00" not in doc.text and "\n" not in doc.title


@SETTINGS
@given(
    text=MARKUP, chars=st.integers(20, 300), overlap=st.integers(0, 19), cuts=st.lists(st.integers(0, 400), max_size=5)
)
def test_passages_point_into_the_document_and_cover_its_text(text, chars, overlap, cuts):
    from loraqa.documents import Document, split_document

    text = text.replace("\ud800", "")
    starts = sorted({c for c in cuts if c < len(text)})
    doc = Document("d", "t", text, page_starts=starts[:2], headings=[(c, "h") for c in starts[2:]])
    passages = split_document(doc, chars, overlap)
    covered = set()
    for p in passages:
        assert p.text == text[p.start : p.end] and p.text.strip()
        assert p.end - p.start <= chars
        covered.update(range(p.start, p.end))
    assert [p.start for p in passages] == sorted(p.start for p in passages)
    assert all(i in covered for i, c in enumerate(text) if not c.isspace())  # nothing is lost


@SETTINGS
@given(query=st.text(max_size=1500))
def test_a_query_gives_search_words_or_one_line(query):
    from loraqa.retrieval.store import query_terms

    try:
        terms = query_terms(query)
    except LoraqaError:
        return
    assert terms and len(terms) <= 100 and all(t == t.lower() and t for t in terms)


@SETTINGS
@given(passage=MARKUP, start=st.integers(0, 400), length=st.integers(1, 40), hint=st.none() | st.integers(-50, 500))
def test_a_located_span_is_the_answer_as_the_passage_writes_it(passage, start, length, hint):
    from loraqa.synth.checks import locate_span

    answer = passage[start : start + length]
    span = locate_span(answer, passage, hint)
    if answer.strip():
        assert span is not None
    if span is not None:
        s, e = span
        assert 0 <= s < e <= len(passage)
        assert " ".join(passage[s:e].lower().split()) == " ".join(answer.lower().split())


@SETTINGS
@given(
    export=JSON_VALUES
    | st.lists(
        st.fixed_dictionaries(
            {
                "id": st.integers(),
                "data": st.fixed_dictionaries({"text": MARKUP, "question": MARKUP}, optional={"loraqa": JSON_VALUES}),
            },
            optional={"annotations": JSON_VALUES, "predictions": JSON_VALUES},
        ),
        max_size=4,
    )
)
def test_a_review_export_gives_rows_or_one_line_per_bad_task(export):
    from loraqa.review.jobs import import_reviews

    with tempfile.TemporaryDirectory() as folder:
        source, out = Path(folder) / "export.json", Path(folder) / "rows.jsonl"
        source.write_text(json.dumps(export), encoding="utf-8")
        try:
            report = import_reviews(str(source), str(out))
        except LoraqaError:
            return
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == report.kept and all("\n" not in line for line in report.bad)
    for row in rows:
        for text, at in zip(row["answers"]["text"], row["answers"]["answer_start"]):
            assert row["context"][at : at + len(text)] == text and at >= 0
