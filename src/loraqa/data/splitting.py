"""Cleaning, seeded sampling and the train/test split, each counted in a DataReport."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from loraqa.data.loading import load_rows
from loraqa.data.tasks import QA, rows_for_task
from loraqa.errors import LoraqaError

log = logging.getLogger("loraqa")


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
        raise LoraqaError(
            f"{n} rows cannot be split with data.test_size={test_size}; "
            "use more rows (data.num_samples) or another test_size"
        )
    rng = np.random.default_rng(seed)
    if by in ("context", "document"):
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            key = (r.get("document") or r["context"]) if by == "document" else r["context"]
            groups.setdefault(key, []).append(i)
        keys = list(groups)
        test_idx: list[int] = []
        for g in rng.permutation(len(keys)):
            if len(test_idx) >= n_test:
                break
            test_idx += groups[keys[g]]
        test_set = set(test_idx)
        if len(test_set) == n:
            raise LoraqaError(
                f"every row shares one {'passage' if by == 'context' else 'document'}, so a split by "
                f"{by} leaves no training rows; set data.split_by=random"
            )
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
    if cfg_data.task != QA:  # turned after the split, so that split.json names the same rows for every task
        train, test = rows_for_task(train, cfg_data.task), rows_for_task(test, cfg_data.task)
        report.train_rows, report.test_rows = len(train), len(test)
    return train, test, report
