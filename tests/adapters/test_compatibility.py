"""Adapters trained by earlier versions of loraqa keep loading and answering.

The fixture was written by the flat-layout code (commit 20a23f1): if a change to the package
broke reading its `loraqa_config.yaml` or its adapter files, users' existing adapters would
stop working.
"""

from __future__ import annotations

import json

from helpers import FIXTURES, read_jsonl, run_cli, write_jsonl

OLD = FIXTURES / "old_layout_adapter"


def test_an_adapter_written_by_the_old_layout_answers_as_it_did(tmp_path):
    expected = json.loads((OLD / "expected_answers.json").read_text())
    questions = write_jsonl(
        tmp_path / "q.jsonl", [{"question": e["question"], "context": e["context"]} for e in expected]
    )
    res = run_cli(
        "predict",
        "-a",
        f"old={OLD / 'adapter'}",
        "--model",
        str(OLD / "base"),
        "--input",
        str(questions),
        "--output",
        str(tmp_path / "a.jsonl"),
    )
    assert res.exit_code == 0, res.output
    answers = [row["answer"] for row in read_jsonl(tmp_path / "a.jsonl")]
    assert answers == [e["answer"] for e in expected]
    # the old adapter had memorised these: its answers are the references, not noise
    assert answers == [e["reference"] for e in expected]
