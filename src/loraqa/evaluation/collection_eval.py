"""`loraqa collection evaluate`: how well a collection's search finds the passages that answer
real questions, in each search mode, with no adapter at all.

Questions come as SQuAD JSON (each context is its document, as `collection add` reads a SQuAD
file: found again by its text; questions without an answer are left out) or as JSONL rows
`{"question", "answers": [texts], "document"?}`, where `document` names the question's document by
its source (as `collection show` lists it), the source's file name, or its title. A hit is a
retrieved passage of the question's document (any document when none is named) that holds a
gold answer: at its offsets where the file gives them (SQuAD), as text otherwise. Recall is in
percent, as `eval --retrieve` prints it; `per_document` searches each question within its own
document only (what a user who asks of one policy or one paper does).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from loraqa.data.squad_format import is_official
from loraqa.documents.document import content_id
from loraqa.errors import LoraqaError, UsageError
from loraqa.retrieval.filters import Filter
from loraqa.retrieval.search import MODES

RECALL_AT = (1, 5, 20)


@dataclass
class Question:
    text: str
    answers: list[str]
    document: str | None  # the document's id in the collection (None: any)
    starts: list[int] | None = None  # the answers' offsets in the document, where the file gives them


def _documents_by_name(collection) -> dict[str, set[str]]:
    """Every name a document may be called by (source, source file name, title) -> ids."""
    names: dict[str, set[str]] = defaultdict(set)
    for info in collection.documents():
        for name in (info.source, Path(info.source.split("#")[0].split(":")[0]).name, info.title):
            if name:
                names[name].add(info.id)
    return names


def read_questions(path: str, collection) -> list[Question]:
    """The questions of a SQuAD JSON or JSONL file, each tied to its document in the collection."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read the questions file {path} ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        data = None
    if is_official(data):
        return _squad_questions(data, collection, path)
    questions, names = [], None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            raise UsageError(
                f"{path} line {n}: not JSON (SQuAD JSON, or JSONL rows of question, answers, document)"
            ) from None
        answers = row.get("answers") if isinstance(row, dict) else None
        if isinstance(answers, str):
            answers = [answers]
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("question"), str)
            or not isinstance(answers, list)
            or not all(isinstance(a, str) for a in answers)
        ):
            raise UsageError(f"{path} line {n}: a row needs 'question' (text) and 'answers' (a list of texts)")
        answers = [a for a in answers if a.strip()]
        if not answers or not row["question"].strip():
            continue
        document = row.get("document")
        if document is not None:
            names = names if names is not None else _documents_by_name(collection)
            ids = names.get(str(document), set())
            if len(ids) != 1:
                raise UsageError(
                    f"{path} line {n}: the document '{str(document)[:80]}' is "
                    f"{'in no document' if not ids else f'the name of {len(ids)} documents'} of "
                    f"{collection.name}; name it by its source, as `loraqa collection show` lists it"
                )
            document = next(iter(ids))
        questions.append(Question(row["question"], answers, document))
    return questions


def _squad_questions(data: dict, collection, path: str) -> list[Question]:
    present = {info.id for info in collection.documents()}
    questions, missing = [], 0
    for article in data["data"]:
        for paragraph in article.get("paragraphs", []) if isinstance(article, dict) else []:
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            if not isinstance(context, str):
                continue
            doc = content_id(context.replace("\r\n", "\n").replace("\r", "\n"))
            for qa in paragraph.get("qas", []):
                answers = [a for a in qa.get("answers", []) if isinstance(a, dict) and str(a.get("text", "")).strip()]
                if not answers or qa.get("is_impossible"):
                    continue
                if doc not in present:
                    missing += 1
                    continue
                given = [a.get("answer_start") for a in answers]
                starts = [s for s in given if isinstance(s, int)]
                questions.append(
                    Question(
                        str(qa.get("question", "")),
                        [str(a["text"]) for a in answers],
                        doc,
                        starts if len(starts) == len(given) else None,
                    )
                )
    if missing and not questions:
        raise LoraqaError(
            f"none of the contexts of {path} is a document of {collection.name}: add the file to it "
            "first (`loraqa collection add`)"
        )
    return questions


def holds_answer(hit, question: Question) -> bool:
    if question.document is not None and hit.document != question.document:
        return False
    if question.starts is not None:
        return any(hit.start <= s and s + len(a) <= hit.end for a, s in zip(question.answers, question.starts))
    return any(a in hit.text for a in question.answers)


def evaluate_collection(
    library,
    name: str,
    questions: list[Question],
    modes: list[str] | None = None,
    per_document: bool = False,
    progress=None,
    where: Filter | None = None,
) -> dict:
    """{mode: {"recall@1", "recall@5", "recall@20", "mrr", "questions"}} for each mode asked
    (default: every mode the collection supports); where: search only a filter's passages."""
    collection = library.open(name)
    modes = list(modes or (MODES if collection.embedder_info() is not None else ["lexical"]))
    for mode in modes:
        if mode not in MODES:
            raise UsageError(f"unknown search mode {mode!r}; use {', '.join(MODES)}")
    if per_document and any(q.document is None for q in questions):
        raise UsageError("--per-document searches each question within its document: every question must name one")
    out = {}
    for mode in modes:
        ranks = []
        for n, q in enumerate(questions, 1):
            scope = Filter((q.document,)) if per_document and q.document is not None else None
            if where is not None:
                scope = (
                    where
                    if scope is None
                    else Filter(scope.documents, where.source, where.title, where.pages, where.meta)
                )
            hits = library.search(name, q.text, max(RECALL_AT), mode, scope)
            ranks.append(next((i for i, h in enumerate(hits, 1) if holds_answer(h, q)), None))
            if progress is not None:
                progress(mode, n, len(questions))
        total = len(ranks) or 1
        out[mode] = {
            f"recall@{k}": round(100 * sum(1 for r in ranks if r is not None and r <= k) / total, 2) for k in RECALL_AT
        }
        out[mode]["mrr"] = round(sum(1 / r for r in ranks if r is not None) / total, 4)
        out[mode]["questions"] = len(ranks)
    return out
