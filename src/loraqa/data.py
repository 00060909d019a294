"""Load QA data from the hub or local files and normalise it to one row shape.

Row: {id, title, context, question, answers: {text: [...], answer_start: [...]}}.
An empty `answers.text` list is a SQuAD v2 unanswerable question.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loraqa.errors import LoraqaError
from loraqa.hub import looks_like_path, use_cache_only_if_offline

log = logging.getLogger("loraqa")

LOCAL_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
FLAT_COLUMNS = "id, title, context, question, answers{text, answer_start}"
SIMPLE_COLUMNS = "question, context, answer"


# ---------------------------------------------------------------- loading

def load_rows(source: str, split: str = "train") -> list[dict]:
    """All rows of a source, normalised. `split` applies to hub datasets only."""
    path = Path(source).expanduser()
    if path.suffix.lower() in LOCAL_SUFFIXES or looks_like_path(source):
        if not path.is_file():
            raise LoraqaError(f"data file not found: {source}; pass an existing file with --data PATH")
        raw = _read_local(path)
        where = str(path)
    else:
        raw = _read_hub(source, split)
        where = f"{source} ({split})"
    rows = [normalise_row(r, i, where) for i, r in enumerate(raw)]
    if not rows:
        raise LoraqaError(f"{where} holds no rows; check the file or pass another with --data PATH")
    return rows


def _read_local(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if suffix == ".json":
            text = path.read_text(encoding="utf-8")
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                # Many "json" exports are really JSON lines.
                return [json.loads(line) for line in text.splitlines() if line.strip()]
            if isinstance(data, dict) and isinstance(data.get("data"), list):
                return list(flatten_official(data))
            if isinstance(data, list):
                return data
            raise LoraqaError(
                f"{path}: JSON must be an official SQuAD file ({{'data': [...]}}) or a list of rows "
                f"with columns {FLAT_COLUMNS} or {SIMPLE_COLUMNS}"
            )
        import pandas as pd

        frame = pd.read_csv(path, keep_default_na=False) if suffix == ".csv" else pd.read_parquet(path)
        return frame.to_dict(orient="records")
    except LoraqaError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, OSError) as exc:
        kind = suffix.lstrip(".").upper()
        detail = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise LoraqaError(f"{path} is not a readable {kind} file ({detail}); fix or replace it") from None


def flatten_official(data: dict):
    """Official SQuAD v1.1 / v2.0 nested JSON → flat rows (the hub's column layout)."""
    for article in data["data"]:
        title = article.get("title", "")
        for para in article.get("paragraphs", []):
            context = para.get("context", "")
            for qa in para.get("qas", []):
                answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                yield {
                    "id": qa.get("id"),
                    "title": title,
                    "context": context,
                    "question": qa.get("question", ""),
                    "answers": {
                        "text": [a.get("text", "") for a in answers],
                        "answer_start": [a.get("answer_start", -1) for a in answers],
                    },
                }


def _read_hub(name: str, split: str) -> list[dict]:
    online = use_cache_only_if_offline()
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # noqa: BLE001 - the hub raises many types; all mean "not loadable"
        why = "the Hugging Face Hub is unreachable and it is not in the local cache" if not online else (
            str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
        raise LoraqaError(
            f"could not load dataset '{name}' (split '{split}'): {why}; "
            "pass a local file with --data PATH (official SQuAD JSON, JSONL, JSON, CSV or Parquet)"
        ) from None
    return ds.to_list()


def normalise_row(raw: dict, index: int, where: str) -> dict:
    if not isinstance(raw, dict):
        raise LoraqaError(f"{where}: row {index + 1} is not an object with columns {FLAT_COLUMNS}")
    cols = set(raw)
    if "question" not in cols or not ({"answers", "answer"} & cols):
        raise LoraqaError(
            f"{where}: columns {sorted(cols)} are not a QA layout; expected {FLAT_COLUMNS} "
            f"or {SIMPLE_COLUMNS}"
        )
    context = _text(raw.get("context"))
    question = _text(raw.get("question"))
    if "answers" in cols:
        answers = _parse_answers(raw["answers"], where, index)
    else:
        answer = _text(raw.get("answer"))
        answers = {"text": [answer], "answer_start": [context.find(answer)]} if answer else {"text": [], "answer_start": []}
    rid = raw.get("id")
    if rid is None or rid == "":
        rid = hashlib.sha1(f"{question}\x00{context}".encode()).hexdigest()[:16]
    return {"id": str(rid), "title": _text(raw.get("title")), "context": context, "question": question, "answers": answers}


def _text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _as_list(value) -> list:
    return [] if value is None else list(value)


def _parse_answers(value, where: str, index: int) -> dict:
    if isinstance(value, str):  # CSV stores the answers struct as JSON text
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise LoraqaError(f"{where}: row {index + 1} column 'answers' is not JSON like "
                              '{"text": [...], "answer_start": [...]}') from None
    if isinstance(value, list):  # [{text, answer_start}, ...]
        value = {"text": [a.get("text", "") for a in value], "answer_start": [a.get("answer_start", -1) for a in value]}
    if not isinstance(value, dict) or "text" not in value:
        raise LoraqaError(f"{where}: row {index + 1} column 'answers' must hold text and answer_start lists")
    # Parquet gives numpy arrays, whose truth value is ambiguous: test for None explicitly.
    texts = [str(t) for t in _as_list(value.get("text"))]
    starts = _as_list(value.get("answer_start")) or [-1] * len(texts)
    starts = [int(s) if s is not None else -1 for s in starts] + [-1] * (len(texts) - len(starts))
    return {"text": texts, "answer_start": starts[: len(texts)]}


# ---------------------------------------------------------------- cleaning, sampling, splitting

@dataclass
class DataReport:
    source: str = ""
    rows_loaded: int = 0
    empty: int = 0
    duplicates: int = 0
    answer_not_in_context: int = 0
    unanswerable: int = 0
    rows_usable: int = 0
    num_samples_requested: int | None = None
    rows_sampled: int = 0
    train_rows: int = 0
    test_rows: int = 0
    split_by: str = "random"
    shared_contexts_across_split: int = 0
    features: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)


def clean_rows(rows: list[dict], needs_context: bool, report: DataReport) -> list[dict]:
    """Drop empty rows, duplicates and answers that are not in their context; count each."""
    kept, seen = [], set()
    for r in rows:
        if not r["question"].strip() or (needs_context and not r["context"].strip()):
            report.empty += 1
            continue
        key = (" ".join(r["question"].lower().split()), r["context"])
        if key in seen:
            report.duplicates += 1
            continue
        seen.add(key)
        texts = r["answers"]["text"]
        if texts and any(not t.strip() for t in texts):
            report.empty += 1
            continue
        if texts and needs_context and not all(t in r["context"] for t in texts):
            report.answer_not_in_context += 1
            continue
        if not texts:
            report.unanswerable += 1
        kept.append(r)
    report.rows_usable = len(kept)
    return kept


def sample_rows(rows: list[dict], num_samples: int | None, seed: int, report: DataReport) -> list[dict]:
    """Seeded shuffle then take the first N: the same rows as datasets' shuffle(seed).select(range(N))."""
    report.num_samples_requested = num_samples
    order = np.random.default_rng(seed).permutation(len(rows))
    if num_samples is not None and num_samples > len(rows):
        msg = f"data.num_samples={num_samples} but only {len(rows)} usable rows exist; using all of them"
        log.warning(msg)
        report.warnings.append(msg)
    n = len(rows) if num_samples is None else min(num_samples, len(rows))
    picked = [rows[i] for i in order[:n]]
    report.rows_sampled = len(picked)
    return picked


def split_rows(rows: list[dict], test_size: float, seed: int, by: str, report: DataReport) -> tuple[list, list]:
    """Seeded train/test split. `by='context'` keeps every passage on one side only."""
    n = len(rows)
    n_test = math.ceil(test_size * n)
    if n_test < 1 or n - n_test < 1:
        raise LoraqaError(f"{n} rows cannot be split with data.test_size={test_size}; "
                          "use more rows (data.num_samples) or another test_size")
    rng = np.random.default_rng(seed)
    if by == "context":
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            groups.setdefault(r["context"], []).append(i)
        keys = list(groups)
        test_idx: list[int] = []
        for g in rng.permutation(len(keys)):
            if len(test_idx) >= n_test:
                break
            test_idx += groups[keys[g]]
        test_set = set(test_idx)
        if len(test_set) == n:
            raise LoraqaError("every row shares one passage, so a split by context leaves no training rows; "
                              "set data.split_by=random")
        train = [r for i, r in enumerate(rows) if i not in test_set]
        test = [rows[i] for i in sorted(test_set)]
    else:
        # The same assignment as datasets' train_test_split(test_size, seed=seed).
        perm = rng.permutation(n)
        test = [rows[i] for i in perm[:n_test]]
        train = [rows[i] for i in perm[n_test:]]
    report.split_by = by
    report.train_rows, report.test_rows = len(train), len(test)
    report.shared_contexts_across_split = len({r["context"] for r in train} & {r["context"] for r in test})
    return train, test


def prepare_splits(cfg_data, needs_context: bool) -> tuple[list, list, DataReport]:
    report = DataReport(source=cfg_data.source)
    rows = load_rows(cfg_data.source)
    report.rows_loaded = len(rows)
    rows = clean_rows(rows, needs_context, report)
    if not rows:
        raise LoraqaError(
            f"{cfg_data.source} has no usable rows ({report.empty} empty, {report.duplicates} duplicates, "
            f"{report.answer_not_in_context} with the answer missing from the context); fix the data"
        )
    rows = sample_rows(rows, cfg_data.num_samples, cfg_data.seed, report)
    train, test = split_rows(rows, cfg_data.test_size, cfg_data.seed, cfg_data.split_by, report)
    return train, test, report
