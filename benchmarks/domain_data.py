"""Real documents and questions of three of the seed's domains, written as files loraqa reads.

Each set becomes a folder of whole documents (one text file each: a paper, a policy's sections
joined, a story's sections joined) and a JSONL file of its questions, each naming its document by
file name, with its answers as text (`{"question", "answers", "document"}`, what `loraqa
collection evaluate --questions` reads). loraqa cuts the passages itself: the data sets'
paragraphs are not kept.

| set | where it comes from | licence |
|---|---|---|
| clinical | COVID-QA, deepset-ai/COVID-QA `data/question-answering/200423_covidQA.json` | Apache-2.0 |
| policy | PolicyQA dev split, wasiahmad/PolicyQA `data/dev.json` (its policies: OPP-115, non-commercial) | MIT / OPP-115 terms |
| literature | FairytaleQA train and val, uci-soe/FairytaleQAData `data-by-train-split/` (explicit questions whose answer stands verbatim in the story) | Apache-2.0 |

None of it is committed: the files are read from the paths given (a checkout of each repository,
or the single files).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

SETS = ("clinical", "policy", "literature")


def _name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:80] or "doc"


def _squad_documents(path: Path, join_paragraphs: bool) -> tuple[dict[str, str], list[dict]]:
    """{file name: text}, [questions] from a SQuAD-format file: one document per article (its
    paragraphs joined by blank lines) or per paragraph."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    docs, questions = {}, []
    for n, article in enumerate(data["data"], 1):
        paragraphs = article["paragraphs"]
        if join_paragraphs:
            name = f"{_name(str(article.get('title') or n))}-{n}.txt"
            docs[name] = "\n\n".join(p["context"].strip() for p in paragraphs)
            groups = [(name, p) for p in paragraphs]
        else:
            groups = []
            for p in paragraphs:
                name = f"{_name(str(p.get('document_id') or article.get('title') or n))}.txt"
                docs[name] = p["context"].strip()
                groups.append((name, p))
        for name, p in groups:
            for qa in p["qas"]:
                answers = list(dict.fromkeys(a["text"] for a in qa.get("answers", []) if a["text"].strip()))
                if answers and not qa.get("is_impossible"):
                    questions.append({"question": qa["question"], "answers": answers, "document": name})
    return docs, questions


def clinical(path: Path):
    """COVID-QA: each paper (one context each) a document."""
    return _squad_documents(path, join_paragraphs=False)


def policy(path: Path):
    """PolicyQA dev: each privacy policy (its sections joined) a document."""
    return _squad_documents(path, join_paragraphs=True)


def literature(folder: Path, splits=("train", "val")):
    """FairytaleQA: each story (its sections joined) a document; its explicit questions whose
    first answer stands verbatim in the story."""
    root = Path(folder)
    if (root / "data-by-train-split").is_dir():
        root = root / "data-by-train-split"
    docs, questions = {}, []
    for split in splits:
        for story in sorted((root / "section-stories" / split).glob("*.csv")):
            key = story.name.removesuffix("-story.csv").removesuffix(".csv")
            with story.open(encoding="utf-8", newline="") as f:
                text = "\n\n".join(row["text"].strip() for row in csv.DictReader(f) if row["text"].strip())
            name = f"{_name(key)}.txt"
            docs[name] = text
            qfile = root / "questions" / split / f"{key}-questions.csv"
            if not qfile.is_file():
                continue
            with qfile.open(encoding="utf-8", newline="") as f:
                for row in csv.DictReader(f):
                    answer = (row.get("answer1") or "").strip()
                    if row.get("ex-or-im1") == "explicit" and answer and answer in text:
                        questions.append({"question": row["question"].strip(), "answers": [answer], "document": name})
    return docs, questions


def write_set(name: str, source: Path, out: Path) -> tuple[Path, Path]:
    """The set's documents under out/NAME/docs/ and its questions in out/NAME/questions.jsonl."""
    docs, questions = {"clinical": clinical, "policy": policy, "literature": literature}[name](Path(source))
    folder = out / name / "docs"
    folder.mkdir(parents=True, exist_ok=True)
    for file, text in docs.items():
        (folder / file).write_text(text, encoding="utf-8")
    qpath = out / name / "questions.jsonl"
    qpath.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions), encoding="utf-8")
    return folder, qpath
