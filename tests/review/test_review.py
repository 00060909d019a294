"""`loraqa review export|import`: Label Studio tasks out (its question-answering config, the
current answers pre-filled as predictions) and its JSON export back as training data.

The export side is checked against the shapes of Label Studio's own "Question Answering"
template (label_studio/annotation_templates/natural-language-processing/question-answering):
objects `text` and `question`, span labels `answer` with the label "Answer", results
{"from_name", "to_name", "type": "labels", "value": {"start", "end", "text", "labels"}}. The
import side reads annotated tasks in the layout of Label Studio's JSON export (its task format
documentation): annotations with `result`, `was_cancelled`, `completed_by`, `updated_at`."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

from helpers import read_jsonl, run_cli, write_jsonl

PASSAGE = "The bridge over the Tarn opened in 1932. Ada Brunel built it from local granite quarried at Roc."
OTHER = "Ottoline painted the barn a pale blue in the spring of 1950."


def synthetic_rows():
    def row(i, passage, question, answer, f1, document):
        at = passage.find(answer) if answer else None
        return {
            "id": f"r{i}",
            "title": document,
            "context": passage,
            "question": question,
            "answers": {"text": [answer] if answer else [], "answer_start": [at] if answer else []},
            "document": document,
            "source": f"{document}.md",
            "page": None,
            "passage_start": 0,
            "passage_end": len(passage),
            "generator": "openai:scripted",
            "roundtrip_f1": f1,
        }

    return [
        row(0, PASSAGE, "When did the bridge open?", "1932", 1.0, "bridge"),
        row(1, PASSAGE, "Who built the bridge?", "Ada", 0.6, "bridge"),
        row(2, PASSAGE, "What is the bridge made of?", "granite", 0.55, "bridge"),
        row(3, OTHER, "Who painted the barn?", "Ottoline", 0.9, "barn"),
        row(4, OTHER, "When did the bridge open?", None, None, "barn"),
    ]


def annotation(result, cancelled=False, when="2026-12-01T10:00:00Z", who=7):
    """One annotation as Label Studio's JSON export writes it."""
    return {
        "id": 100,
        "completed_by": who,
        "result": result,
        "was_cancelled": cancelled,
        "ground_truth": False,
        "created_at": when,
        "updated_at": when,
        "lead_time": 12.5,
        "task": 1,
        "project": 3,
    }


def span(passage, text, start=None, rid="x1"):
    start = passage.find(text) if start is None else start
    return {
        "value": {"start": start, "end": start + len(text), "text": text, "labels": ["Answer"]},
        "id": rid,
        "from_name": "answer",
        "to_name": "text",
        "type": "labels",
        "origin": "manual",
    }


def choice(value):
    return {
        "value": {"choices": [value]},
        "id": "c1",
        "from_name": "verdict",
        "to_name": "text",
        "type": "choices",
        "origin": "manual",
    }


def rewrite(text):
    return {
        "value": {"text": [text]},
        "id": "t1",
        "from_name": "question_fix",
        "to_name": "text",
        "type": "textarea",
        "origin": "manual",
    }


def test_exported_tasks_follow_label_studio_s_question_answering_format(tmp_path):
    data = write_jsonl(tmp_path / "synth.jsonl", synthetic_rows())
    out = tmp_path / "tasks.json"
    res = run_cli("review", "export", str(data), "-o", str(out))
    assert res.exit_code == 0, res.output
    tasks = json.loads(out.read_text())
    config = ET.fromstring((tmp_path / "tasks.label_config.xml").read_text())
    objects = {e.get("name"): e.get("value") for e in config.iter("Text")}
    controls = {e.get("name"): (e.tag, e.get("toName")) for e in config if e.get("toName")}
    assert objects == {"text": "$text", "question": "$question"}
    assert controls["answer"] == ("Labels", "text") and controls["verdict"] == ("Choices", "text")
    labels = {e.get("value") for e in config.iter("Label")}
    choices = {e.get("value") for e in config.iter("Choice")}
    assert len(tasks) == 5
    for t, row in zip(tasks, synthetic_rows()):
        assert t["data"]["text"] == row["context"] and t["data"]["question"] == row["question"]
        assert t["data"]["loraqa"]["document"] == row["document"] and t["data"]["loraqa"]["id"] == row["id"]
        (prediction,) = t["predictions"]
        assert prediction["model_version"] == "openai:scripted"
        for result in prediction["result"]:
            tag, to = controls[result["from_name"]]
            assert result["to_name"] == to and {"Labels": "labels", "Choices": "choices"}[tag] == result["type"]
            value = result["value"]
            if result["type"] == "labels":
                assert value["labels"][0] in labels and set(value) == {"start", "end", "text", "labels"}
                assert row["context"][value["start"] : value["end"]] == value["text"] == row["answers"]["text"][0]
            else:
                assert value["choices"] == ["No answer in passage"] and set(value["choices"]) <= choices
    assert tasks[4]["predictions"][0]["result"][0]["type"] == "choices"  # the unanswerable row
    # the least sure first: round-trip F1 0.55 and 0.6
    res = run_cli("review", "export", str(data), "-o", str(tmp_path / "few.json"), "--least-confident", "2")
    assert res.exit_code == 0, res.output
    assert [t["data"]["loraqa"]["id"] for t in json.loads((tmp_path / "few.json").read_text())] == ["r2", "r1"]


def test_reviewed_tasks_come_back_as_training_rows(tmp_path):
    """Kept as is, a corrected span, a rejected pair, a skipped task, an unreviewed task, a
    rewritten question marked as having no answer, a span pasted from elsewhere, and a span
    whose offsets Label Studio shifted (trimmed spaces): each lands where a user expects."""
    data = write_jsonl(tmp_path / "synth.jsonl", synthetic_rows())
    tasks_file = tmp_path / "tasks.json"
    assert run_cli("review", "export", str(data), "-o", str(tasks_file)).exit_code == 0
    tasks = json.loads(tasks_file.read_text())
    exported = []
    for i, t in enumerate(tasks):
        t = {"id": i + 1, **t, "created_at": "2026-12-01T09:00:00Z", "project": 3}
        exported.append(t)
    exported[0]["annotations"] = [annotation(tasks[0]["predictions"][0]["result"] + [choice("Keep")])]
    exported[1]["annotations"] = [
        annotation([span(PASSAGE, "Ada")]),  # an earlier pass, then the correction
        annotation([span(PASSAGE, "Ada Brunel")], when="2026-12-01T11:00:00Z", who=8),
    ]
    exported[2]["annotations"] = [annotation([choice("Reject")])]
    exported[3]["annotations"] = [annotation([], cancelled=True)]
    exported[4]["annotations"] = [
        annotation([choice("No answer in passage"), rewrite("When did the barn get its colour?")])
    ]

    def another(t, tid, annotations):
        data = {**t["data"], "loraqa": {**t["data"]["loraqa"], "id": f"r{tid}"}}
        return {**t, "id": tid, "data": data, "annotations": annotations}

    extra = [
        another(exported[0], 6, [annotation([span(PASSAGE, "Tarn Bridge", start=4)])]),
        another(exported[0], 7, [annotation([span(PASSAGE, "granite", start=PASSAGE.find("granite") + 1)])]),
        another(exported[3], 8, []),
    ]
    export = tmp_path / "project-3-at-2026-12-01.json"
    export.write_text(json.dumps(exported + extra))
    out = tmp_path / "reviewed.jsonl"
    res = run_cli("review", "import", str(export), "-o", str(out))
    assert res.exit_code == 0, res.output
    got = read_jsonl(out)
    assert [r["id"] for r in got] == ["r0", "r1", "r4", "r7"]  # r7's span re-located: its offsets were off by one
    assert [(r["question"], r["answers"]["text"]) for r in got] == [
        ("When did the bridge open?", ["1932"]),
        ("Who built the bridge?", ["Ada Brunel"]),
        ("When did the barn get its colour?", []),
        ("When did the bridge open?", ["granite"]),
    ]
    for r in got:
        for text, at in zip(r["answers"]["text"], r["answers"]["answer_start"]):
            assert r["context"][at : at + len(text)] == text
        assert r["reviewed"] is True and r["document"] in ("bridge", "barn")
    assert got[1]["reviewer"] == 8 and got[2]["original_question"] == "When did the bridge open?"
    assert "4 kept (2 answers corrected, 1 questions rewritten, 1 without an answer)" in res.stderr
    assert "1 rejected" in res.stderr and "1 skipped" in res.stderr and "1 unreviewed" in res.stderr
    assert "1 span not in passage" in res.stderr
    # --keep-unreviewed keeps the pre-filled answers of tasks nobody opened
    res = run_cli("review", "import", str(export), "-o", str(tmp_path / "all.jsonl"), "--keep-unreviewed")
    assert res.exit_code == 0
    assert {r["question"] for r in read_jsonl(tmp_path / "all.jsonl") if not r["reviewed"]} == {"Who painted the barn?"}
    from loraqa.data.loading import load_rows

    assert len(load_rows(str(out))) == 4  # `loraqa train --data` reads it as it is


def test_the_least_confident_predictions_go_to_review(two_adapters, tmp_path):
    """From `loraqa predict`'s output and the questions it answered: the answers least likely
    under the model first, their spans pre-filled where the passage quotes them."""
    rows = two_adapters["rows"][:6]
    questions = write_jsonl(
        tmp_path / "questions.jsonl",
        [{"id": r["id"], "question": r["question"], "context": r["context"]} for r in rows],
    )
    preds = tmp_path / "preds.jsonl"
    res = run_cli("predict", "-a", str(two_adapters["titles"]), "--input", str(questions), "--output", str(preds))
    assert res.exit_code == 0, res.output
    answered = read_jsonl(preds)
    out = tmp_path / "tasks.json"
    res = run_cli(
        "review", "export", str(preds), "--questions", str(questions), "-o", str(out), "--least-confident", "3"
    )
    assert res.exit_code == 0, res.output
    tasks = json.loads(out.read_text())
    by_id = {p["id"]: p for p in answered}
    least = sorted((p for p in answered if p["score"] is not None), key=lambda p: p["score"])[:3]
    assert [t["data"]["loraqa"]["id"] for t in tasks] == [p["id"] for p in least]
    for t in tasks:
        p = by_id[t["data"]["loraqa"]["id"]]
        assert t["predictions"][0]["score"] == round(math.exp(p["score"]), 4)
        for result in t["predictions"][0]["result"]:
            if result["type"] == "labels":
                assert t["data"]["text"][result["value"]["start"] : result["value"]["end"]] == p["answer"]
    res = run_cli("review", "export", str(preds), "-o", str(out))
    assert res.exit_code != 0 and "--questions" in res.stderr


def test_exports_that_are_not_label_studio_json_are_one_line_errors(tmp_path):
    out = tmp_path / "rows.jsonl"
    minimal = tmp_path / "min.json"
    minimal.write_text(json.dumps([{"id": 1, "text": PASSAGE, "question": "q", "answer": []}]))  # JSON-MIN
    broken = tmp_path / "broken.json"
    broken.write_text("id,text\n1,abc\n")
    for path, says in (
        (minimal, "JSON-MIN"),
        (broken, "not a Label Studio JSON export"),
        (tmp_path / "no.json", "not found"),
    ):
        res = run_cli("review", "import", str(path), "-o", str(out))
        assert res.exit_code != 0 and says in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.output
        assert not out.exists()


def test_review_exports_of_the_wrong_shape_are_one_line_per_task(tmp_path):
    """Types Label Studio never writes, offsets that are not offsets, answers too long to be a
    span, deep nesting and lone surrogates: a line for each bad task, the good ones imported,
    nothing half-written; a 200,000-word span is located in linear time."""
    import time

    good = {
        "id": 1,
        "data": {"text": PASSAGE, "question": "When did the bridge open?", "loraqa": {"id": "g"}},
        "annotations": [annotation([span(PASSAGE, "1932")])],
    }

    def bad(tid, **changes):
        return {**good, "id": tid, **changes}

    def one(value):
        return [annotation([{**span(PASSAGE, "1932"), "value": value}])]

    tasks = [
        good,
        bad(2, annotations=5),
        bad(
            3,
            annotations=[
                annotation([choice("Keep")])
                | {"result": [{"from_name": "verdict", "type": "choices", "value": {"choices": {}}}]}
            ],
        ),
        bad(4, annotations=one([1, 2])),
        bad(5, annotations=one({"start": -26, "end": 4, "text": "1932", "labels": ["Answer"]})),
        bad(6, annotations=one({"start": True, "end": 4, "text": "1932", "labels": ["Answer"]})),
        bad(7, annotations=one({"start": 10**9, "end": 4, "text": "1932", "labels": ["Answer"]})),
        bad(8, annotations=one({"start": 0, "end": 4, "text": "x" * 1001, "labels": ["Answer"]})),
        bad(9, data={**good["data"], "loraqa": {"id": "s", "note": "\ud800"}}),
        bad(10, annotations=[{"result": [{"from_name": "answer", "type": "labels", "value": {"x": [[[[1]]]]}}]}]),
    ]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    out = tmp_path / "rows.jsonl"
    res = run_cli("review", "import", str(export), "-o", str(out))
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert [line.split("task ")[1].split(":")[0] for line in lines] == ["2", "3", "4", "5", "6", "7", "8"]
    assert "not an offset in the passage" in lines[3] and "longer than 1,000 characters" in lines[6]
    assert [r["id"] for r in read_jsonl(out)] == ["g", "s"]  # task 10 has no span: dropped, as any such task
    assert read_jsonl(out)[1]["note"] == "\ufffd"
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    res = run_cli("review", "import", str(deep), "-o", str(tmp_path / "deep.jsonl"))
    assert res.exit_code == 1 and "nests too deeply" in res.stderr and "Traceback" not in res.output
    words = " ".join(f"w{i % 97}" for i in range(200_000))
    long_passage = f"Start. {words} End."
    from loraqa.synth.checks import locate_span

    started = time.monotonic()
    assert locate_span(words.upper().replace(" ", "  "), long_passage) == (7, 7 + len(words))
    assert time.monotonic() - started < 5  # the \s+ pattern of the old fallback ran past 300 s
