"""Running the server: Prometheus metrics, hot loading that cannot hurt the loaded adapters,
and adapters chosen by domain."""

from __future__ import annotations

import json
import shutil

import pytest

from helpers import local_client, read_jsonl, run_cli, write_jsonl

KEY = {"Authorization": "Bearer k"}


@pytest.fixture()
def client(domain_adapters, tmp_path):
    """The admin key k (it also asks questions); adapters load from the test's tmp_path."""
    from loraqa.inference.answerer import Answerer
    from loraqa.serving.app import create_app
    from loraqa.serving.options import ServeOptions

    answerer = Answerer({n: str(p) for n, p in domain_adapters["runs"].items()}, dtype="fp32")
    with local_client(create_app(answerer, ServeOptions(admin_key="k", adapter_root=tmp_path))) as c:
        yield c


def sample(text: str, name: str, **labels) -> float | None:
    """A sample's value from the Prometheus text format."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # prometheus-client sorts them
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_count_requests_batches_queue_and_adapters(client, domain_adapters):
    row = domain_adapters["rows"]["science"][0]
    q = {"question": row["question"], "context": row["context"], "adapter": "science"}
    for _ in range(2):
        assert client.post("/v1/answer", json=q, headers=KEY).status_code == 200
    assert client.post("/v1/answer", json={**q, "adapter": "nope"}, headers=KEY).status_code == 404
    chat = {"model": "places", "messages": [{"role": "user", "content": "Where?"}]}
    assert client.post("/v1/chat/completions", json=chat, headers=KEY).status_code == 200
    assert client.get("/metrics").status_code == 401  # the API-key rule of the other routes
    text = client.get("/metrics", headers=KEY).text
    assert (
        sample(
            text, "loraqa_requests_total", adapter="science", route="/v1/answer", status="200", key="LORAQA_ADMIN_KEY"
        )
        == 2
    )
    # a name that is not loaded is counted as "unknown": clients cannot grow the label set
    assert (
        sample(
            text, "loraqa_requests_total", adapter="unknown", route="/v1/answer", status="404", key="LORAQA_ADMIN_KEY"
        )
        == 1
    )
    assert 'adapter="nope"' not in text
    assert (
        sample(
            text,
            "loraqa_requests_total",
            adapter="places",
            route="/v1/chat/completions",
            status="200",
            key="LORAQA_ADMIN_KEY",
        )
        == 1
    )
    assert sample(text, "loraqa_request_duration_seconds_count", adapter="science") == 2
    assert sample(text, "loraqa_batch_size_count") == 3  # one model call per answered request here
    assert sample(text, "loraqa_batch_size_sum") == 3
    assert sample(text, "loraqa_queue_depth") == 0
    assert sample(text, "loraqa_adapters_loaded") == 2


def test_a_failing_hot_load_leaves_the_loaded_adapters_answering(client, domain_adapters, tmp_path):
    rows = {n: domain_adapters["rows"][n][0] for n in ("science", "places")}
    asks = {n: {"question": r["question"], "context": r["context"], "adapter": n} for n, r in rows.items()}
    before = {n: client.post("/v1/answer", json=q, headers=KEY).json() for n, q in asks.items()}
    assert [before[n]["answer"] for n in rows] == [rows[n]["answers"]["text"][0] for n in rows]

    # the config says rank 4 but the weights are rank 16: refused before it touches the model
    wrong_rank = tmp_path / "wrong-rank"
    shutil.copytree(domain_adapters["runs"]["science"] / "adapter", wrong_rank)
    config = json.loads((wrong_rank / "adapter_config.json").read_text())
    (wrong_rank / "adapter_config.json").write_text(json.dumps({**config, "r": 4}))
    res = client.post("/v1/adapters", json={"name": "broken", "path": str(wrong_rank)}, headers=KEY)
    assert res.status_code == 400 and "does not fit" in res.text and "rank 4" in res.text

    # an adapter trained on a base of another width
    other = tmp_path / "other-base"
    make_adapter_for_another_base(other, domain_adapters["runs"]["science"] / "adapter")
    res = client.post("/v1/adapters", json={"name": "alien", "path": str(other)}, headers=KEY)
    assert res.status_code == 400 and "does not fit" in res.text

    assert [m["id"] for m in client.get("/v1/models", headers=KEY).json()["data"]] == [
        "science",
        "places",
        "base",
        "auto",
    ]
    after = {n: client.post("/v1/answer", json=q, headers=KEY).json() for n, q in asks.items()}
    for n in rows:
        assert after[n]["answer"] == before[n]["answer"] and after[n]["score"] == pytest.approx(
            before[n]["score"], abs=1e-5
        )


def make_adapter_for_another_base(out, like):
    """A LoRA adapter (with loraqa's config) for a T5 whose layers are 32 wide instead of 64."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    model = T5ForConditionalGeneration(
        T5Config(
            vocab_size=600,
            d_model=32,
            d_ff=64,
            num_layers=1,
            num_heads=2,
            d_kv=16,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    peft = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=16, target_modules=["q", "v"]))
    peft.save_pretrained(out)
    AutoTokenizer.from_pretrained(like).save_pretrained(out)
    shutil.copy(like / "loraqa_config.yaml", out / "loraqa_config.yaml")


def test_hot_loaded_adapters_show_in_the_model_list_at_once(client, domain_adapters, tmp_path):
    shutil.copytree(
        domain_adapters["runs"]["science"], tmp_path / "science", ignore=shutil.ignore_patterns("checkpoints")
    )
    res = client.post("/v1/adapters", json={"name": "science2", "path": "science"}, headers=KEY)
    assert res.status_code == 201, res.text
    assert "science2" in [m["id"] for m in client.get("/v1/models", headers=KEY).json()["data"]]
    assert client.delete("/v1/adapters/science2", headers=KEY).status_code == 200
    assert "science2" not in [m["id"] for m in client.get("/v1/models", headers=KEY).json()["data"]]


def test_training_writes_a_domain_profile_that_describes_the_adapter(domain_adapters):
    profile = json.loads((domain_adapters["runs"]["science"] / "adapter" / "loraqa_domain.json").read_text())
    assert profile["train_questions"] == len(domain_adapters["rows"]["science"])
    assert profile["source"].endswith("data.jsonl") and profile["run_name"] == "run"
    top = sorted(profile["tfidf"]["centroid"], key=profile["tfidf"]["centroid"].get, reverse=True)[:15]
    assert {"insulin", "photosynthesis", "curie"} & set(top)


def test_predict_rows_choose_their_adapter_by_domain(domain_adapters, tmp_path):
    rows = [r for n in ("science", "places") for r in domain_adapters["rows"][n][:2]]
    src = write_jsonl(
        tmp_path / "q.jsonl", [{"question": r["question"], "context": r["context"], "adapter": "auto"} for r in rows]
    )
    args = [x for n, p in domain_adapters["runs"].items() for x in ("-a", f"{n}={p}")]
    res = run_cli("predict", *args, "--input", str(src), "--output", str(tmp_path / "a.jsonl"))
    assert res.exit_code == 0, res.output
    out = read_jsonl(tmp_path / "a.jsonl")
    assert [o["adapter"] for o in out] == ["science", "science", "places", "places"]
    assert all(0 < o["route_score"] <= 1 for o in out)
    assert [o["answer"] for o in out] == [r["answers"]["text"][0] for r in rows]


def test_adapters_without_a_profile_are_not_candidates(domain_adapters, tmp_path, caplog):
    from loraqa.errors import AdapterNotFound
    from loraqa.inference.answerer import Answerer

    bare = tmp_path / "bare"
    shutil.copytree(domain_adapters["runs"]["places"], bare)
    (bare / "adapter" / "loraqa_domain.json").unlink()
    with caplog.at_level("WARNING", logger="loraqa"):
        answerer = Answerer({"science": str(domain_adapters["runs"]["science"]), "bare": str(bare)}, dtype="fp32")
    assert "adapter 'bare' has no domain profile" in caplog.text
    row = domain_adapters["rows"]["places"][0]  # a places question: only science can be chosen
    assert (
        answerer.answer([{"question": row["question"], "context": row["context"], "adapter": "auto"}])[0].adapter
        == "science"
    )
    alone = Answerer({"bare": str(bare)}, dtype="fp32")
    with pytest.raises(AdapterNotFound, match="domain profile"):
        alone.answer([{"question": row["question"], "adapter": "auto"}])
