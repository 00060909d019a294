"""Load QA data from the hub or local files and normalise it to one row shape.

Row: {id, title, context, question, answers: {text: [...], answer_start: [...]}}.
An empty `answers.text` list is a SQuAD v2 unanswerable question.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from loraqa.data.squad_format import is_official, official_rows
from loraqa.errors import LoraqaError, option
from loraqa.hub import looks_like_path, use_cache_only_if_offline

LOCAL_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
FLAT_COLUMNS = "id, title, context, question, answers{text, answer_start}"
SIMPLE_COLUMNS = "question, context, answer"


# ---------------------------------------------------------------- loading


def load_rows(source: str, split: str = "train") -> list[dict]:
    """All rows of a source, normalised. `split` applies to hub datasets only."""
    path = Path(source).expanduser()
    if path.suffix.lower() in LOCAL_SUFFIXES or looks_like_path(source):
        if not path.is_file():
            raise LoraqaError(f"data file not found: {source}; pass an existing file with {option('data')}")
        raw = _read_local(path)
        where = str(path)
    else:
        raw = _read_hub(source, split)
        where = f"{source} ({split})"
    rows = [normalise_row(r, i, where) for i, r in enumerate(raw)]
    if not rows:
        raise LoraqaError(f"{where} holds no rows; check the file or pass another with {option('data')}")
    return rows


def raw_rows(path: Path) -> list[dict]:
    """A local file's rows as stored, every column kept (provenance and all), not normalised."""
    if not path.is_file():
        raise LoraqaError(f"file not found: {path}")
    return _read_local(path)


def _read_local(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
        if suffix == ".json":
            text = path.read_text(encoding="utf-8")
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                # Many "json" exports are really JSON lines.
                return [json.loads(line) for line in text.split("\n") if line.strip()]
            if is_official(data):
                return official_rows(data)
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


def _read_hub(name: str, split: str) -> list[dict]:
    online = use_cache_only_if_offline()
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # noqa: BLE001 - the hub raises many types; all mean "not loadable"
        why = (
            "the Hugging Face Hub is unreachable and it is not in the local cache"
            if not online
            else (str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
        )
        raise LoraqaError(
            f"could not load dataset '{name}' (split '{split}'): {why}; "
            f"pass a local file with {option('data')} (official SQuAD JSON, JSONL, JSON, CSV or Parquet)"
        ) from None
    return ds.to_list()


def normalise_row(raw: dict, index: int, where: str) -> dict:
    if not isinstance(raw, dict):
        raise LoraqaError(f"{where}: row {index + 1} is not an object with columns {FLAT_COLUMNS}")
    cols = set(raw)
    if "question" not in cols or not ({"answers", "answer"} & cols):
        raise LoraqaError(
            f"{where}: columns {sorted(cols)} are not a QA layout; expected {FLAT_COLUMNS} or {SIMPLE_COLUMNS}"
        )
    context = _text(raw.get("context"))
    question = _text(raw.get("question"))
    if "answers" in cols:
        answers = _parse_answers(raw["answers"], where, index)
    else:
        answer = _text(raw.get("answer"))
        answers = (
            {"text": [answer], "answer_start": [context.find(answer)]} if answer else {"text": [], "answer_start": []}
        )
    rid = raw.get("id")
    if rid is None or rid == "":
        rid = hashlib.sha1(f"{question}\x00{context}".encode()).hexdigest()[:16]
    row = {
        "id": str(rid),
        "title": _text(raw.get("title")),
        "context": context,
        "question": question,
        "answers": answers,
    }
    if raw.get("document") not in (None, ""):  # the document a passage came from (data.split_by=document)
        row["document"] = _text(raw["document"])
    return row


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
            raise LoraqaError(
                f'{where}: row {index + 1} column \'answers\' is not JSON like {{"text": [...], "answer_start": [...]}}'
            ) from None
    if isinstance(value, list):  # [{text, answer_start}, ...]
        value = {"text": [a.get("text", "") for a in value], "answer_start": [a.get("answer_start", -1) for a in value]}
    if not isinstance(value, dict) or "text" not in value:
        raise LoraqaError(f"{where}: row {index + 1} column 'answers' must hold text and answer_start lists")
    # Parquet gives numpy arrays, whose truth value is ambiguous: test for None explicitly.
    texts = [str(t) for t in _as_list(value.get("text"))]
    starts = _as_list(value.get("answer_start")) or [-1] * len(texts)
    starts = [int(s) if s is not None else -1 for s in starts] + [-1] * (len(texts) - len(starts))
    return {"text": texts, "answer_start": starts[: len(texts)]}
