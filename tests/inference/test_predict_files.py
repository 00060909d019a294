"""`loraqa predict --input`: every row checked before any model work, each problem one line naming
the file and the line; rows split at "\n" only; answers written as they are answered, and
`--resume` answers only the rows not in the output yet."""

from __future__ import annotations

import json

import pytest

from helpers import read_jsonl, run_cli


def predict(two_adapters, src, out, *extra):
    return run_cli("predict", "-a", str(two_adapters["answers"]), "--input", str(src), "--output", str(out), *extra)


@pytest.mark.parametrize(
    "content,message",
    [
        (b'{"question": "Q?"}\n{"question": "caf\xe9?"}\n', "line 2 is not UTF-8 text"),
        (b'{"question": 5}\n', "line 1 has a 'question' that is not a non-empty string"),
        (b'{"question": "Q?"}\n{"question": "Q?", "context": NaN}\n', "line 2: NaN is not a JSON value"),
        (b'{"question": "Q?", "context": ["a", "b"]}\n', "line 1 has a 'context' that is not a string"),
        (b'{"question": "Q?", "id": 1.5}\n', "line 1 has an 'id' that is not a string or an integer"),
        (b"[1, 2]\n", "line 1 is not an object"),
        (b'{"question": ' + b"[" * 50_000 + b"]" * 50_000 + b"}\n", "line 1: nested too deeply"),
        (b'{"question": "Q?", "adapter": "nope"}\n', "line 1: unknown adapter 'nope'"),
    ],
)
def test_a_bad_row_is_one_line_naming_the_file_and_row(two_adapters, tmp_path, content, message):
    src = tmp_path / "q.jsonl"
    src.write_bytes(content)
    res = predict(two_adapters, src, tmp_path / "a.jsonl")
    assert res.exit_code == 1 and "Traceback" not in res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(src) in errors[0] and message in errors[0], res.stderr
    assert not (tmp_path / "a.jsonl").exists()  # nothing written


def test_a_line_separator_inside_a_passage_does_not_split_the_row(two_adapters, tmp_path):
    """U+2028 is valid unescaped inside a JSON string (loraqa's own output used to write it so)."""
    row = two_adapters["rows"][0]
    src = tmp_path / "q.jsonl"
    context = row["context"] + "\u2028Second paragraph.\u2029"
    src.write_text(
        json.dumps({"question": row["question"], "context": context}, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    out = tmp_path / "a.jsonl"
    assert predict(two_adapters, src, out).exit_code == 0
    text = out.read_text(encoding="utf-8")
    assert len(text.splitlines()) == 1  # escaped in the output: even str.splitlines() sees one row
    assert read_jsonl(out)[0]["answer"] == row["answers"]["text"][0]


def test_answers_are_written_as_they_come_and_resume_skips_them(two_adapters, tmp_path):
    rows = two_adapters["rows"]
    lines = [
        {"id": f"r{i}", "question": rows[i % len(rows)]["question"], "context": rows[i % len(rows)]["context"]}
        for i in range(11)
    ]
    lines[9]["question"] = "why " * 300  # leaves no room for the passage: found when its chunk is planned
    src, out = tmp_path / "q.jsonl", tmp_path / "a.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in lines))
    res = predict(two_adapters, src, out, "--batch-size", "1")  # chunks of 4 rows
    assert res.exit_code == 1 and "line 10" in res.stderr
    assert [r["id"] for r in read_jsonl(out)] == [f"r{i}" for i in range(8)]  # the first two chunks are kept

    with open(out, "a", encoding="utf-8") as fh:
        fh.write('{"id": "r8", "quest')  # a run killed while writing a row
    lines[9]["question"] = rows[0]["question"]
    src.write_text("".join(json.dumps(r) + "\n" for r in lines))
    res = predict(two_adapters, src, out, "--batch-size", "1", "--resume")
    assert res.exit_code == 0, res.output
    assert "wrote 3 answers" in res.stderr and "8 already there" in res.stderr
    got = read_jsonl(out)
    assert [r["id"] for r in got] == [f"r{i}" for i in range(11)]
    assert all(r["answer"] == rows[i % len(rows)]["answers"]["text"][0] for i, r in enumerate(got) if i != 9)
