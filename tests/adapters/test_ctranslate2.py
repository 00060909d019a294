"""The CTranslate2 engine: `loraqa export`, then predict / eval / serve with `--engine ctranslate2`,
answering with the same prompts, windows, scores and offsets as the PyTorch engine."""

from __future__ import annotations

import json

import pytest

from helpers import local_client, read_jsonl, run_cli, write_jsonl


@pytest.fixture(scope="module")
def random_adapter(tmp_path_factory, tokenizer):
    """A random LoRA adapter on a tiny random base whose output layer is random enough to write
    varied tokens. The base's ids are exactly the tokenizer's (600), so its answers decode to real
    text: parity cannot pass on empty strings."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSeq2SeqLM

    from loraqa.config import dump_config, load_config
    from loraqa.diagnostics.synthetic import build_t5

    work = tmp_path_factory.mktemp("random-adapter")
    base = build_t5("tiny", vocab_size=len(tokenizer), seed=5, dropout=0.0)
    torch.manual_seed(5)
    base.lm_head.weight.data.normal_(0.0, 1.0)
    base.save_pretrained(work / "base")
    tokenizer.save_pretrained(work / "base")
    model = get_peft_model(
        AutoModelForSeq2SeqLM.from_pretrained(work / "base"),
        LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=8, target_modules=["q", "v", "wo"], init_lora_weights=False),
    )
    out = work / "adapter"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    cfg = load_config(
        "default",
        sets=["eval.max_new_tokens=12", "data.max_source_length=96", "model.dtype=fp32"],
        overrides={"model": {"name": str(work / "base")}},
    )
    (out / "loraqa_config.yaml").write_text(dump_config(cfg))
    return out


@pytest.fixture(scope="module")
def exported(random_adapter, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    paths = {}
    for quantization in ("float32", "int8"):
        paths[quantization] = out / quantization
        res = run_cli("export", str(random_adapter), "--output", str(paths[quantization]), "-q", quantization)
        assert res.exit_code == 0, res.output
    return paths


def predict(tmp_path, engine: str, adapter, name: str, src):
    out = tmp_path / f"{name}.jsonl"
    res = run_cli("predict", "--engine", engine, "-a", f"x={adapter}", "--input", str(src), "--output", str(out))
    assert res.exit_code == 0, res.output
    return read_jsonl(out)


def test_export_writes_a_self_contained_folder(exported, random_adapter):
    folder = exported["int8"]
    for name in ("model.bin", "config.json", "tokenizer.json", "loraqa_config.yaml", "README.md"):
        assert (folder / name).is_file(), name
    card = (folder / "README.md").read_text()
    assert "library_name: ctranslate2" in card and "int8" in card
    assert (folder / "loraqa_config.yaml").read_text() == (random_adapter / "loraqa_config.yaml").read_text()


@pytest.mark.parametrize("long", [False, True], ids=["short passages", "long documents in windows"])
def test_float32_export_answers_like_pytorch_fp32(exported, random_adapter, squad_rows, long):
    from loraqa.inference.answerer import Answerer

    contexts = [
        (" ".join(x["context"] for x in squad_rows[:6]) + " " + r["context"]) if long else r["context"]
        for r in squad_rows
    ]
    requests = [{"question": r["question"], "context": c} for r, c in zip(squad_rows, contexts)]
    torch_answers = Answerer({"x": str(random_adapter)}, dtype="fp32").answer(requests)
    ct2_answers = Answerer({"x": str(exported["float32"])}, engine="ctranslate2").answer(requests)
    assert sum(bool(a.answer) for a in torch_answers) >= 0.9 * len(requests)  # real text, not empty strings
    same = [a.answer == b.answer for a, b in zip(torch_answers, ct2_answers)]
    assert sum(same) >= 0.95 * len(same)
    for a, b in zip(torch_answers, ct2_answers):
        assert a.windows == b.windows and (a.windows > 2 or not long)
        if a.answer == b.answer:
            assert (a.start, a.end, a.no_answer) == (b.start, b.end, b.no_answer)
            assert a.score == pytest.approx(b.score, abs=1e-3)


def test_int8_answers_a_memorised_adapter_right(two_adapters, tmp_path):
    out = tmp_path / "answers-int8"
    assert run_cli("export", str(two_adapters["answers"]), "--output", str(out)).exit_code == 0
    rows = two_adapters["rows"]
    src = write_jsonl(tmp_path / "q.jsonl", [{"question": r["question"], "context": r["context"]} for r in rows])
    got = predict(tmp_path, "ctranslate2", out, "int8", src)
    right = sum(g["answer"] == r["answers"]["text"][0] for g, r in zip(got, rows))
    assert right >= len(rows) - 1
    assert all(g["adapter"] == "x" and g["score"] < 0 for g in got)


def test_eval_with_ctranslate2_scores_the_runs_held_out_questions(tiny_model_dir, tmp_path):
    from helpers import SQUAD_V1

    run = tmp_path / "run"
    res = run_cli(
        "train",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(SQUAD_V1),
        "--output",
        str(run),
        "--set",
        "train.max_steps=4",
        "--set",
        "train.eval_steps=0",
        "--set",
        "track.report_to=none",
    )
    assert res.exit_code == 0, res.output
    exported = tmp_path / "exported"
    assert run_cli("export", str(run), "--output", str(exported)).exit_code == 0
    res = run_cli("eval", str(exported), "--engine", "ctranslate2")
    assert res.exit_code == 0, res.output
    summary = json.loads((exported / "eval" / "summary.json").read_text())
    held_out = json.loads((run / "split.json").read_text())["test"]
    assert summary["engine"] == "ctranslate2" and summary["total"] == len(held_out)
    assert summary["token_accuracy"] is None  # no teacher forcing in CTranslate2
    assert sorted(i["id"] for i in read_jsonl(exported / "eval" / "predictions.jsonl")) == sorted(held_out)


def test_serve_with_ctranslate2_batches_adapters_together(two_adapters, tmp_path):
    from loraqa.inference.answerer import Answerer
    from loraqa.serving.app import create_app

    folders = {}
    for name in ("answers", "titles"):
        folders[name] = tmp_path / name
        assert (
            run_cli("export", str(two_adapters[name]), "--output", str(folders[name]), "-q", "float32").exit_code == 0
        )
    answerer = Answerer({n: str(p) for n, p in folders.items()}, engine="ctranslate2")
    row = two_adapters["rows"][0]
    q = {"question": row["question"], "context": row["context"]}
    with local_client(create_app(answerer)) as client:
        res = client.post(
            "/v1/answer/batch", json={"requests": [{**q, "adapter": "answers"}, {**q, "adapter": "titles"}]}
        )
        assert res.status_code == 200, res.text
        got = [a["answer"] for a in res.json()["answers"]]
        assert got == [row["answers"]["text"][0], row["title"]]
        assert client.get("/health").json()["batches"] == 1  # one batch, one translator call per adapter
        assert client.post("/v1/answer", json={**q, "adapter": "base"}).status_code == 404  # no base model here


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["--quantization", "int4"], 2, "--quantization must be one of"),
        (["--format", "onnx"], 2, "--format must be ctranslate2"),
    ],
)
def test_export_bad_options(random_adapter, tmp_path, args, code, message):
    res = run_cli("export", str(random_adapter), "--output", str(tmp_path / "x"), *args)
    assert res.exit_code == code and message in res.stderr and not (tmp_path / "x").exists()


def test_a_lora_adapter_given_to_the_ctranslate2_engine_says_what_to_do(random_adapter):
    res = run_cli(
        "predict", "--engine", "ctranslate2", "-a", str(random_adapter), "--question", "Q?", "--context", "Text."
    )
    assert res.exit_code == 1 and "loraqa export" in res.stderr and "Traceback" not in res.output


def test_extractive_decoding_needs_the_pytorch_engine(exported, squad_rows, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", squad_rows[:3])
    res = run_cli(
        "eval",
        str(exported["float32"]),
        "--engine",
        "ctranslate2",
        "--data",
        str(data),
        "--set",
        "eval.extractive=true",
        "--output",
        str(tmp_path / "ev"),
    )
    assert res.exit_code == 1 and "needs the PyTorch engine" in res.stderr
