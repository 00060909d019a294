"""Data loading, normalisation, cleaning, sampling and splitting."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from helpers import SQUAD_V1
from loraqa.config import load_config
from loraqa.data.loading import load_rows
from loraqa.data.splitting import DataReport, clean_rows, prepare_splits, sample_rows, split_rows
from loraqa.errors import LoraqaError

V2 = {
    "version": "v2.0",
    "data": [
        {
            "title": "T",
            "paragraphs": [
                {
                    "context": "Bern is the Swiss capital.",
                    "qas": [
                        {
                            "id": "a",
                            "question": "What is the Swiss capital?",
                            "is_impossible": False,
                            "answers": [{"text": "Bern", "answer_start": 0}],
                        },
                        {
                            "id": "b",
                            "question": "What is the Swiss king called?",
                            "is_impossible": True,
                            "answers": [],
                            "plausible_answers": [{"text": "Bern", "answer_start": 0}],
                        },
                    ],
                }
            ],
        }
    ],
}


def test_official_v1_file_is_flattened(squad_rows):
    assert len(squad_rows) == 24
    r = squad_rows[0]
    assert set(r) == {"id", "title", "context", "question", "answers"}
    assert r["id"] == "q001" and r["title"] == "Paris" and r["answers"]["text"] == ["Paris"]
    assert r["answers"]["answer_start"] == [0]
    # a question with two reference answers keeps both
    assert squad_rows[2]["answers"]["text"] == ["the 17th century", "17th century"]


def test_official_v2_unanswerable_has_no_answers(tmp_path):
    f = tmp_path / "v2.json"
    f.write_text(json.dumps(V2))
    rows = load_rows(str(f))
    assert rows[1]["answers"] == {"text": [], "answer_start": []}  # plausible answers are not answers
    report = DataReport()
    assert len(clean_rows(rows, True, report)) == 2 and report.unanswerable == 1


def test_flat_jsonl_csv_parquet_and_simple_columns_load_to_the_same_rows(tmp_path, squad_rows):
    rows = squad_rows[:5]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    pq = tmp_path / "d.parquet"
    pd.DataFrame(rows).to_parquet(pq)
    csv = tmp_path / "d.csv"
    pd.DataFrame(
        [{"question": r["question"], "context": r["context"], "answer": r["answers"]["text"][0]} for r in rows]
    ).to_csv(csv, index=False)
    jlist = tmp_path / "d.json"
    jlist.write_text(json.dumps(rows))
    for path in (jsonl, pq, jlist):
        loaded = load_rows(str(path))
        assert [(r["question"], r["answers"]["text"]) for r in loaded] == [
            (r["question"], r["answers"]["text"]) for r in rows
        ]
    simple = load_rows(str(csv))
    assert [r["answers"]["text"][0] for r in simple] == [r["answers"]["text"][0] for r in rows]
    assert simple[0]["answers"]["answer_start"] == [rows[0]["context"].find(rows[0]["answers"]["text"][0])]
    assert len({r["id"] for r in simple}) == 5  # ids are made up when missing, and stable


def test_bad_rows_are_counted_not_used(squad_rows):
    good = squad_rows[:4]
    dup = dict(good[0], id="dup")
    empty = dict(good[1], id="e", question="  ")
    missing = dict(good[2], id="m", question="Where is it?", answers={"text": ["Berlin"], "answer_start": [0]})
    report = DataReport()
    kept = clean_rows(good + [dup, empty, missing], needs_context=True, report=report)
    assert [r["id"] for r in kept] == [r["id"] for r in good]
    assert (report.duplicates, report.empty, report.answer_not_in_context) == (1, 1, 1)


def test_sampling_is_seeded_and_matches_datasets_shuffle(squad_rows):
    import datasets

    a = sample_rows(squad_rows, 10, 42, DataReport())
    b = sample_rows(squad_rows, 10, 42, DataReport())
    c = sample_rows(squad_rows, 10, 7, DataReport())
    assert a == b and a != c
    hf = datasets.Dataset.from_list(squad_rows).shuffle(seed=42).select(range(10))
    assert [r["id"] for r in a] == hf["id"]  # the seed experiment's exact 5,000 rows


def test_asking_for_too_many_samples_uses_all_with_a_warning(squad_rows, caplog):
    report = DataReport()
    with caplog.at_level("WARNING"):
        rows = sample_rows(squad_rows, 1000, 42, report)
    assert len(rows) == 24 and "only 24 usable rows" in caplog.text and report.warnings


def test_random_split_matches_datasets_train_test_split(squad_rows):
    import datasets

    train, test = split_rows(squad_rows, 0.2, 42, "random", DataReport())
    hf = datasets.Dataset.from_list(squad_rows).train_test_split(test_size=0.2, seed=42)
    assert [r["id"] for r in train] == hf["train"]["id"] and [r["id"] for r in test] == hf["test"]["id"]


def test_split_by_context_never_shares_a_passage(squad_rows):
    report = DataReport()
    train, test = split_rows(squad_rows, 0.25, 1, "context", report)
    assert {r["context"] for r in train}.isdisjoint({r["context"] for r in test})
    assert report.shared_contexts_across_split == 0 and len(train) + len(test) == 24
    _, _random_test = split_rows(squad_rows, 0.25, 1, "random", r2 := DataReport())
    assert r2.shared_contexts_across_split > 0  # what the grouped split prevents


def test_prepare_splits_reports_counts():
    cfg = load_config("seed", overrides={"data": {"source": str(SQUAD_V1)}})
    _train, _test, report = prepare_splits(cfg.data, needs_context=False)
    assert (report.rows_loaded, report.rows_sampled, report.train_rows, report.test_rows) == (24, 24, 19, 5)


@pytest.mark.parametrize(
    "content,suffix,message",
    [
        (None, ".json", "data file not found"),
        ("{not json", ".json", "is not a readable JSON file"),
        ('{"a": 1}', ".json", "must be an official SQuAD file"),
        ('{"title": "x"}\n', ".jsonl", "are not a QA layout"),
        ("", ".jsonl", "holds no rows"),
        ("\x00\x01garbage", ".parquet", "is not a readable PARQUET file"),
    ],
)
def test_bad_data_files_are_explained(tmp_path, content, suffix, message):
    f = tmp_path / f"data{suffix}"
    if content is not None:
        f.write_text(content)
    with pytest.raises(LoraqaError, match=message):
        load_rows(str(f))


def test_file_with_no_usable_rows_is_explained(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"question": "Q?", "context": "abc", "answer": "zzz"}) + "\n")
    cfg = load_config("default", overrides={"data": {"source": str(f)}})
    with pytest.raises(LoraqaError, match=r"no usable rows .*1 with the answer missing"):
        prepare_splits(cfg.data, needs_context=True)


def test_unreachable_hub_names_the_local_path_option(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from loraqa import hub

    hub.hub_reachable.cache_clear()
    with pytest.raises(LoraqaError, match=r"Hub is unreachable.*data\.source") as info:
        load_rows("some-org/no-such-dataset-here")
    assert "pass a local file with --data PATH" in info.value.cli_message()  # what the CLI prints
