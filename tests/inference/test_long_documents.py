"""Documents of any length: every window is read, the best-scored answer wins, answers carry
their evidence (score, no_answer, offsets, windows), and abstention is calibrated.

The adapter here is trained on documents made of several passages, with windows that do not
hold the answer labelled "unanswerable" (data.negative_windows), the way the default preset
trains; it then has to find answers that sit only in the last window of a document.
"""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from helpers import MEMORISE, local_client, read_jsonl, run_cli, write_jsonl

WINDOW = ["data.max_source_length=96", "data.doc_stride=24"]


def document(row: dict, fillers: list[str], answer_last: bool = True) -> dict:
    """The row's passage after (or among) passages about other things."""
    parts = fillers + [row["context"]] if answer_last else fillers[:1] + [row["context"]] + fillers[1:]
    context = " ".join(parts)
    start = context.find(row["context"]) + row["answers"]["answer_start"][0]
    return dict(row, context=context, answers={"text": [row["answers"]["text"][0]], "answer_start": [start]})


@pytest.fixture(scope="module")
def reader(tmp_path_factory, nodrop_model_dir, squad_rows):
    """An adapter that reads: trained on 4 questions inside 16 documents (the passage at
    different places among the same 4 filler passages), 8 windows without the answer per document."""
    from loraqa.config import load_config
    from loraqa.training.train import train

    passages = list(dict.fromkeys(r["context"] for r in squad_rows))
    fillers = passages[4:]
    questions = [squad_rows[i] for i in (0, 3, 6, 9)]  # one question on each of the first 4 passages

    def rotated(k):
        return fillers[k:] + fillers[:k]

    rows = [
        dict(document(q, rotated(k), answer_last=bool(k % 2)), id=f"{q['id']}-{k}") for q in questions for k in range(4)
    ]
    work = tmp_path_factory.mktemp("reader")
    data = write_jsonl(work / "train.jsonl", rows)
    cfg = load_config(
        "default",
        sets=["train.max_steps=300", *MEMORISE, *WINDOW, "data.negative_windows=8", "data.test_size=0.05"],
        overrides={"model": {"name": str(nodrop_model_dir)}, "data": {"source": str(data)}},
    )
    run = train(cfg, output=str(work / "run")).run_dir
    tests = [document(q, rotated(1)) for q in questions]  # the answer's passage last
    absent = [
        dict(q, id=f"{q['id']}-absent", context=" ".join(rotated(2)), answers={"text": [], "answer_start": []})
        for q in questions
    ]
    return {
        "run": run,
        "documents": tests,
        "absent": absent,
        "fillers": fillers,
        "passages": [q["context"] for q in questions],
    }


def test_training_adds_windows_without_the_answer_and_counts_them(reader):
    report = json.loads((reader["run"] / "data_report.json").read_text())
    counts = report["features"]["train"]
    assert counts["negative_windows"] >= 8 * counts["rows"] * 0.9  # 8 per long document (some have fewer)
    assert counts["context_truncated"] == counts["rows"]  # every document is longer than the window


def test_an_answer_only_in_the_last_window_is_found_with_its_offsets(reader, tmp_path):
    from loraqa.inference.reading import WindowShape, plan_reading
    from loraqa.modeling.files import load_tokenizer

    docs = reader["documents"]
    tok = load_tokenizer(str(reader["run"] / "adapter"))
    for d in docs:  # the answer's passage is in the last window only: cutting from the start never sees it
        windows = plan_reading(tok, d["question"], d["context"], WindowShape("squad", 96, 24))
        assert len(windows) > 8
        holding = [
            w
            for w in windows
            if d["answers"]["answer_start"][0] >= w.window.start
            and d["answers"]["answer_start"][0] + len(d["answers"]["text"][0]) <= w.window.end
        ]
        assert holding and windows[0] not in holding
    questions = write_jsonl(
        tmp_path / "q.jsonl", [{"id": d["id"], "question": d["question"], "context": d["context"]} for d in docs]
    )
    res = run_cli("predict", "-a", str(reader["run"]), "--input", str(questions), "--output", str(tmp_path / "a.jsonl"))
    assert res.exit_code == 0, res.output
    out = read_jsonl(tmp_path / "a.jsonl")
    assert {"answer", "adapter", "score", "no_answer", "start", "end", "windows"} <= set(out[0])
    found = [(o, d) for o, d in zip(out, docs) if o["answer"] == d["answers"]["text"][0]]
    assert len(found) >= 3, [o["answer"] for o in out]
    for o, d in found:
        # the offsets point at the answer where it stands in the document: the last passage
        assert o["start"] == d["answers"]["answer_start"][0] and d["context"][o["start"] : o["end"]] == o["answer"]
        assert o["no_answer"] is False and o["score"] < 0 and o["windows"] > 8


def test_the_score_is_the_answers_mean_log_probability(reader):
    """The score read off generation equals a separate teacher-forced forward pass over the answer."""
    import torch

    from loraqa.inference.answerer import Answerer

    answerer = Answerer({"r": str(reader["run"])}, dtype="fp32")
    d = reader["documents"][1]
    reading = answerer.plan({"question": d["question"], "context": d["context"]})
    answerer.run([(reading, i) for i in range(len(reading.inputs))])
    for inp, got in list(zip(reading.inputs, reading.results))[-3:]:
        target = answerer.tokenizer(got.text)["input_ids"] if got.text else [answerer.tokenizer.eos_token_id]
        with answerer.scoring_model("r") as model, torch.inference_mode():
            logits = model(input_ids=torch.tensor([inp.source]), labels=torch.tensor([target])).logits
        logprobs = torch.log_softmax(logits.float(), -1)[0, torch.arange(len(target)), torch.tensor(target)]
        assert got.tokens == len(target)
        assert got.score == pytest.approx(logprobs.mean().item(), abs=1e-4)


def test_eval_saves_the_no_answer_threshold_and_predict_uses_it(reader, tmp_path):
    from loraqa.evaluation.calibration import score_threshold

    data = write_jsonl(tmp_path / "dev.jsonl", reader["documents"] + reader["absent"])
    out = tmp_path / "ev"
    res = run_cli("eval", str(reader["run"]), "--data", str(data), "--output", str(out))
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    for key in ("best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh", "risk_coverage"):
        assert key in summary
    assert {"f1_at_50", "f1_at_80", "f1_at_100", "auroc"} <= set(summary["risk_coverage"])
    assert summary["best_f1"] >= summary["f1"]  # the threshold can only help on the data it was fitted to
    items = read_jsonl(out / "predictions.jsonl")
    assert all({"score", "no_answer", "start", "end", "windows"} <= set(i) for i in items)
    saved = json.loads((reader["run"] / "adapter" / "loraqa_calibration.json").read_text())
    answered = [i["score"] for i in read_jsonl(out / "predictions.jsonl") if not i["no_answer"]]
    assert saved["no_answer_threshold"] == score_threshold(summary["best_f1_thresh"], answered)
    assert "saved to" in res.stderr

    # later use applies it: an answer scored below the threshold becomes "no answer"
    questions = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {"id": i["id"], "question": d["question"], "context": d["context"]}
            for i, d in zip(items, reader["documents"] + reader["absent"])
        ],
    )
    res = run_cli("predict", "-a", str(reader["run"]), "--input", str(questions), "--output", str(tmp_path / "a.jsonl"))
    assert res.exit_code == 0, res.output
    threshold = saved["no_answer_threshold"]
    for raw, used in zip(items, read_jsonl(tmp_path / "a.jsonl")):
        below = threshold is not None and not raw["no_answer"] and raw["score"] < threshold
        assert used["no_answer"] == (raw["no_answer"] or below), (raw["score"], used["score"], threshold)


def test_a_calibrated_threshold_above_every_score_makes_every_answer_no_answer(reader, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reader["run"], run)
    d = reader["documents"][1]
    args = ["predict", "-a", str(run), "--question", d["question"], "--context", d["context"], "--json"]
    (run / "adapter" / "loraqa_calibration.json").unlink(missing_ok=True)
    free = json.loads(run_cli(*args).stdout)
    assert free["no_answer"] is False and free["answer"]
    (run / "adapter" / "loraqa_calibration.json").write_text(json.dumps({"no_answer_threshold": math.log(0.999)}))
    held = json.loads(run_cli(*args).stdout)
    assert held["no_answer"] is True and held["answer"] == "" and held["score"] == pytest.approx(free["score"])


def test_extractive_decoding_only_quotes_the_document(reader, tmp_path):
    """With eval.extractive every answer is a span of its window (or no answer), even where the
    free model would write something the passage does not say."""
    data = write_jsonl(tmp_path / "dev.jsonl", reader["documents"] + reader["absent"])
    for extractive in ("false", "true"):
        out = tmp_path / extractive
        res = run_cli(
            "eval",
            str(reader["run"]),
            "--data",
            str(data),
            "--output",
            str(out),
            "--set",
            f"eval.extractive={extractive}",
        )
        assert res.exit_code == 0, res.output
    items = read_jsonl(tmp_path / "true" / "predictions.jsonl")
    contexts = {d["id"]: d["context"] for d in reader["documents"] + reader["absent"]}
    for i in items:
        assert i["no_answer"] or i["prediction"] in contexts[i["id"]]
        if not i["no_answer"]:
            assert contexts[i["id"]][i["start"] : i["end"]] == i["prediction"]


def test_the_server_reads_a_100k_character_document(reader):
    from loraqa.inference.answerer import Answerer
    from loraqa.serving.app import create_app

    d, passage = reader["documents"][1], reader["passages"][1]
    filler = " ".join(reader["fillers"] * (100_000 // len(" ".join(reader["fillers"])) + 1))
    context = filler[: 100_000 - len(passage) - 1].rsplit(" ", 1)[0] + " " + passage
    context = " " * (100_000 - len(context)) + context
    assert len(context) == 100_000
    with local_client(create_app(Answerer({"r": str(reader["run"])}, dtype="fp32"))) as client:
        res = client.post("/v1/answer", json={"question": d["question"], "context": context})
    assert res.status_code == 200, res.text
    body = res.json()
    assert {"answer", "adapter", "score", "no_answer", "start", "end", "windows", "latency_ms"} <= set(body)
    assert body["windows"] > 100 and body["adapter"] == "r"
    if body["start"] is not None:
        assert context[body["start"] : body["end"]] == body["answer"]


def test_a_long_document_does_not_hold_a_short_request_back(reader):
    """The long document's windows are spread over batches; a question that arrives meanwhile is
    answered within the next batch, not after the whole document."""
    from loraqa.inference.answerer import Answerer
    from loraqa.serving.batching import Batcher

    answerer = Answerer({"r": str(reader["run"])}, dtype="fp32")
    long_doc = " ".join(reader["fillers"] * 12)
    short = reader["documents"][0]

    async def scenario():
        batcher = Batcher(answerer, window_ms=1, max_batch=4)
        await batcher.start()
        done_at = {}

        async def ask(name, request, delay=0.0):
            await asyncio.sleep(delay)
            await batcher.submit([request])
            done_at[name] = batcher.batches

        long_task = asyncio.create_task(ask("long", {"question": short["question"], "context": long_doc}))
        while batcher.batches < 2:  # the long document is being answered
            await asyncio.sleep(0.001)
        arrived = batcher.batches
        await ask("short", {"question": short["question"], "context": short["context"][-200:]})
        await long_task
        await batcher.stop()
        return arrived, done_at

    arrived, done_at = asyncio.run(scenario())
    assert done_at["short"] <= arrived + 2  # the batch running when it came, then its own
    assert done_at["long"] > done_at["short"] + 5  # the document still had many windows to go


@pytest.mark.parametrize(
    "context,question,code,message",
    [
        ("   ", "Q?", 2, "--context is empty"),
        ("Some text.", "why " * 200, 1, "leaving 0 tokens for the passage"),
    ],
)
def test_bad_documents_on_the_command_line(reader, context, question, code, message):
    res = run_cli("predict", "-a", str(reader["run"]), "--question", question, "--context", context)
    assert res.exit_code == code and "Traceback" not in res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]


@pytest.mark.parametrize(
    "body,code,message",
    [
        ({"question": "Q?", "context": " \n\t "}, 422, "empty or only whitespace"),
        ({"question": "why " * 200, "context": "Some text."}, 413, "shorten the question"),
    ],
)
def test_bad_documents_at_the_server(reader, body, code, message):
    from loraqa.inference.answerer import Answerer
    from loraqa.serving.app import create_app

    with local_client(create_app(Answerer({"r": str(reader["run"])}, dtype="fp32"))) as client:
        res = client.post("/v1/answer", json=body)
    assert res.status_code == code and message in res.json()["detail"]


def test_a_file_row_with_an_empty_document_names_its_line(reader, tmp_path):
    rows = write_jsonl(
        tmp_path / "q.jsonl", [{"question": "Q?", "context": "Text."}, {"question": "Q?", "context": ""}]
    )
    res = run_cli("predict", "-a", str(reader["run"]), "--input", str(rows), "--output", str(tmp_path / "a.jsonl"))
    assert res.exit_code == 1 and "line 2" in res.stderr and "empty" in res.stderr
    assert not (tmp_path / "a.jsonl").exists()
