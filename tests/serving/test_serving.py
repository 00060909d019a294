"""Using adapters: predict, merge, and the HTTP server with several adapters on one base model."""

from __future__ import annotations

import asyncio
import json

import pytest

from helpers import local_client, read_jsonl, run_cli


def test_predict_one_question(two_adapters):
    row = two_adapters["rows"][0]
    res = run_cli(
        "predict", "--adapter", str(two_adapters["answers"]), "--question", row["question"], "--context", row["context"]
    )
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == row["answers"]["text"][0]


def test_predict_file_mixes_adapters_in_one_batch(two_adapters, tmp_path):
    rows = two_adapters["rows"][:3]
    lines = [
        {"id": r["id"], "question": r["question"], "context": r["context"], "adapter": name}
        for r in rows
        for name in ("answers", "titles")
    ]
    src = tmp_path / "q.jsonl"
    src.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "a.jsonl"
    res = run_cli(
        "predict",
        "-a",
        f"answers={two_adapters['answers']}",
        "-a",
        f"titles={two_adapters['titles']}",
        "--input",
        str(src),
        "--output",
        str(out),
    )
    assert res.exit_code == 0, res.output
    got = read_jsonl(out)
    want = [r["answers"]["text"][0] if n == "answers" else r["title"] for r in rows for n in ("answers", "titles")]
    assert [g["answer"] for g in got] == want
    assert [g["adapter"] for g in got] == [line["adapter"] for line in lines]


def test_merged_model_answers_like_base_plus_adapter(two_adapters, tmp_path, answerer):
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from loraqa.inference.reading import WindowShape, plan_reading

    out = tmp_path / "merged"
    res = run_cli("merge", str(two_adapters["answers"]), "--output", str(out))
    assert res.exit_code == 0, res.output
    assert (out / "model.safetensors").is_file() and not list(out.glob("adapter_*"))
    card = (out / "README.md").read_text()
    assert "base_model:" in card and "data.jsonl" in card and "LoRA r=16" in card
    model = AutoModelForSeq2SeqLM.from_pretrained(out).eval()  # plain transformers, no PEFT
    tok = AutoTokenizer.from_pretrained(out)
    rows = two_adapters["rows"]
    merged = []
    with torch.inference_mode():
        for r in rows:
            ids = plan_reading(tok, r["question"], r["context"], WindowShape("squad", 384, 128))[0].source
            gen = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=32, do_sample=False)
            merged.append(tok.decode(gen[0], skip_special_tokens=True).strip())
    via_adapter = [
        a.answer
        for a in answerer.answer(
            [{"question": r["question"], "context": r["context"], "adapter": "answers"} for r in rows]
        )
    ]
    assert merged == via_adapter == [r["answers"]["text"][0] for r in rows]


def test_merge_refuses_to_overwrite(two_adapters, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "x").write_text("keep")
    res = run_cli("merge", str(two_adapters["answers"]), "--output", str(out))
    assert res.exit_code == 1 and "already exists" in res.stderr and (out / "x").read_text() == "keep"


# ---------------------------------------------------------------- HTTP API


@pytest.fixture
def client(answerer):
    from loraqa.serving.app import create_app
    from loraqa.serving.options import ServeOptions

    with local_client(create_app(answerer, ServeOptions(window_ms=20))) as c:
        yield c


@pytest.fixture
def keyed_client(answerer):
    from loraqa.serving.app import create_app
    from loraqa.serving.options import ServeOptions

    with local_client(create_app(answerer, ServeOptions(api_key="s3cret", window_ms=5))) as c:
        yield c


def test_health_adapters_and_docs(client):
    assert client.get("/health").json()["status"] == "ok"
    listed = client.get("/v1/adapters").json()
    assert [a["name"] for a in listed["adapters"]] == ["answers", "titles", "base"]
    assert listed["default"] == "answers"
    assert client.get("/docs").status_code == 200
    assert "/v1/answer" in client.get("/openapi.json").json()["paths"]


def test_two_adapters_answer_differently_in_one_batch(client, two_adapters):
    row = two_adapters["rows"][1]
    q = {"question": row["question"], "context": row["context"]}
    before = client.get("/health").json()["batches"]
    res = client.post(
        "/v1/answer/batch",
        json={"requests": [{**q, "adapter": "answers"}, {**q, "adapter": "titles"}, {**q, "adapter": "base"}]},
    )
    assert res.status_code == 200, res.text
    answers = res.json()["answers"]
    assert answers[0]["answer"] == row["answers"]["text"][0] and answers[0]["adapter"] == "answers"
    assert answers[1]["answer"] == row["title"] and answers[1]["adapter"] == "titles"
    assert answers[0]["answer"] != answers[1]["answer"]
    assert client.get("/health").json()["batches"] == before + 1  # one batch across adapters
    single = client.post("/v1/answer", json=q).json()  # default adapter
    assert single["answer"] == row["answers"]["text"][0] and single["latency_ms"] >= 0


def test_concurrent_requests_are_gathered_into_batches(answerer, two_adapters):
    import httpx

    from loraqa.serving.app import create_app
    from loraqa.serving.options import ServeOptions

    rows = two_adapters["rows"]
    app = create_app(answerer, ServeOptions(window_ms=50, max_batch=32))

    async def fire():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
                reqs = [
                    c.post(
                        "/v1/answer",
                        json={
                            "question": r["question"],
                            "context": r["context"],
                            "adapter": ("answers", "titles")[i % 2],
                        },
                    )
                    for i, r in enumerate(rows * 2)
                ]
                return await asyncio.gather(*reqs), app.state.batcher.batches

    responses, batches = asyncio.run(fire())
    assert all(r.status_code == 200 for r in responses)
    want = [(r["answers"]["text"][0], r["title"])[i % 2] for i, r in enumerate(rows * 2)]
    assert [r.json()["answer"] for r in responses] == want
    assert batches < len(responses)  # 16 requests, fewer model calls


@pytest.mark.parametrize(
    "body,code,message",
    [
        ({"question": "Q?", "adapter": "nope"}, 404, "no such adapter is available to this key"),
        ({"context": "no question"}, 422, "question"),
        ({"question": ""}, 422, "question"),
        ({"question": "x" * 1001}, 413, "question longer than 1000"),
        ({"question": "Q?", "context": "x" * 1_000_001}, 413, "context longer than 1000000"),
    ],
)
def test_bad_requests(client, body, code, message):
    res = client.post("/v1/answer", json=body)
    assert res.status_code == code and message in res.text


def test_oversized_body_is_refused(client):
    res = client.post(
        "/v1/answer", content=b"{" + b" " * 3_000_000 + b"}", headers={"content-type": "application/json"}
    )
    assert res.status_code == 413


def test_batch_request_limits(client):
    assert client.post("/v1/answer/batch", json={"requests": []}).status_code == 422
    many = {"requests": [{"question": "Q?"}] * 65}
    assert client.post("/v1/answer/batch", json=many).status_code == 413


def test_a_failing_request_does_not_take_the_server_down(client, answerer, monkeypatch, two_adapters, caplog):
    """The client gets a generic 500 with a request id, never the exception's text; the server
    logs the traceback under that id and answers the next request."""
    real = answerer.run
    calls = {"n": 0}

    def flaky(batch, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated failure in /secret/path")
        return real(batch, **kw)

    monkeypatch.setattr(client.app.state.batcher, "run_fn", flaky)
    with caplog.at_level("ERROR", logger="loraqa.server"):
        res = client.post("/v1/answer", json={"question": "Q?"})
    request_id = res.headers["x-request-id"]
    assert res.status_code == 500 and request_id in res.json()["detail"]
    assert "simulated" not in res.text and "/secret/path" not in res.text
    assert request_id in caplog.text and "RuntimeError: simulated failure" in caplog.text  # with its traceback
    row = two_adapters["rows"][0]
    ok = client.post("/v1/answer", json={"question": row["question"], "context": row["context"]})
    assert ok.status_code == 200 and ok.json()["answer"] == row["answers"]["text"][0]


def test_api_key_is_required_when_set(keyed_client):
    assert keyed_client.post("/v1/answer", json={"question": "Q?"}).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert keyed_client.post("/v1/answer", json={"question": "Q?"}, headers=wrong).status_code == 401
    assert keyed_client.get("/v1/adapters").status_code == 401
    good = {"Authorization": "Bearer s3cret"}
    assert keyed_client.post("/v1/answer", json={"question": "Q?"}, headers=good).status_code == 200
    assert keyed_client.get("/health").status_code == 200  # health stays open for load balancers


def test_adapter_management_needs_the_admin_key(client, answerer, tmp_path):
    from loraqa.serving.app import create_app
    from loraqa.serving.options import ServeOptions

    res = client.post("/v1/adapters", json={"name": "x", "path": "x"})
    assert res.status_code == 403 and "admin key" in res.text
    assert client.delete("/v1/adapters/titles").status_code == 403
    # the key that asks questions does not unload adapters
    with local_client(create_app(answerer, ServeOptions(api_key="ask", admin_key="admin", adapter_root=tmp_path))) as c:
        asker = {"Authorization": "Bearer ask"}
        assert c.delete("/v1/adapters/titles", headers=asker).status_code == 401
        assert c.post("/v1/adapters", json={"name": "x", "path": "x"}, headers=asker).status_code == 401
        assert "titles" in c.get("/v1/models", headers=asker).text


def test_load_and_unload_adapters_at_run_time(nodrop_model_dir, two_adapters, tmp_path):
    import shutil

    from loraqa.inference.answerer import Answerer
    from loraqa.serving.app import create_app
    from loraqa.serving.options import ServeOptions

    root = tmp_path / "adapters"
    # in the root under another name: a request for 'titles' finds nothing until it is loaded as that
    shutil.copytree(two_adapters["titles"] / "adapter", root / "titles-v1")
    answerer = Answerer({"answers": str(two_adapters["answers"])}, dtype="fp32")
    key = {"Authorization": "Bearer k"}
    row = two_adapters["rows"][2]
    q = {"question": row["question"], "context": row["context"]}
    with local_client(create_app(answerer, ServeOptions(admin_key="k", adapter_root=root))) as c:
        assert c.post("/v1/answer", json={**q, "adapter": "titles"}, headers=key).status_code == 404
        res = c.post("/v1/adapters", json={"name": "titles", "path": "titles-v1"}, headers=key)
        assert res.status_code == 201, res.text
        assert c.post("/v1/answer", json={**q, "adapter": "titles"}, headers=key).json()["answer"] == row["title"]
        dup = c.post("/v1/adapters", json={"name": "titles", "path": "titles-v1"}, headers=key)
        assert dup.status_code == 409
        bad = c.post("/v1/adapters", json={"name": "ghost", "path": "no/such/dir"}, headers=key)
        assert bad.status_code == 404 and "no adapter at 'no/such/dir'" in bad.text
        assert c.delete("/v1/adapters/titles", headers=key).status_code == 200
        assert c.post("/v1/answer", json={**q, "adapter": "titles"}, headers=key).status_code == 404
        assert c.delete("/v1/adapters/titles", headers=key).status_code == 404
        # the remaining adapter still answers
        assert c.post("/v1/answer", json=q, headers=key).json()["answer"] == row["answers"]["text"][0]


def test_beam_search_runs_one_adapter_per_batch(answerer, two_adapters):
    """Mixed-adapter batches support greedy decoding only; with beams each adapter gets its own
    batches and the answers still come back in request order."""
    rows = two_adapters["rows"][:3]
    reqs = [
        {"question": r["question"], "context": r["context"], "adapter": n} for r in rows for n in ("titles", "answers")
    ]
    got = [a.answer for a in answerer.answer(reqs, num_beams=2)]
    assert got == [
        r["title"] if n == "titles" else r["answers"]["text"][0] for r in rows for n in ("titles", "answers")
    ]


def test_adapters_trained_in_fp32_answer_in_fp32_on_a_bf16_machine(two_adapters, monkeypatch):
    """An adapter trained (and calibrated) in fp32 is served in fp32 by default, even where bf16
    is fast: served in bf16 it would answer near its no-answer threshold differently from how
    `loraqa eval` measured it. Asked for, bf16 is still used."""
    from loraqa.inference.answerer import Answerer

    monkeypatch.setenv("LORAQA_CPU_BF16", "1")  # as on a CPU with AMX or AVX512-BF16
    assert Answerer({"answers": str(two_adapters["answers"])}).dtype == "fp32"
    assert Answerer({"answers": str(two_adapters["answers"])}, dtype="bf16").dtype == "bf16"
