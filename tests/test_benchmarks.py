"""Each script under benchmarks/ runs from a clone and writes its figures (tiny runs).

The README quotes these scripts' output: if one of them broke, nobody could reproduce the
figures. The real measurements take minutes each and are not run here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from helpers import SQUAD_V1
from loraqa.modeling.precision import cpu_has_bf16
from warm_python import WarmPython

ROOT = Path(__file__).resolve().parents[1]


WARM = WarmPython()  # started by the first script run, stopped with this module


@pytest.fixture(scope="module", autouse=True)
def _stop_the_warm_interpreter():
    yield
    WARM.close()


def run_script(name: str, *args: str, timeout: int = 420) -> subprocess.CompletedProcess:
    """`python benchmarks/NAME ARGS` from the clone's root, forked from one warm interpreter
    (tests/warm_python.py)."""
    with tempfile.TemporaryDirectory(prefix="loraqa-script-") as out_dir:  # its output is read before it goes
        res = WARM.run(ROOT / "benchmarks" / name, list(args), ROOT, dict(os.environ), Path(out_dir), timeout)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res


def test_train_speed_script_prints_every_target_with_a_verdict(tmp_path):
    """On a CPU without bf16 (AVX2 only) the bf16 row is skipped and says why; every other target
    still gets a verdict. Runs with this CPU's own precision (LORAQA_CPU_BF16=0 simulates an AVX2
    CPU on one that has bf16)."""
    cpu_bf16 = os.environ.get("LORAQA_CPU_BF16", "1" if cpu_has_bf16() else "0")
    out = tmp_path / "train.json"
    res = run_script(
        "train_speed.py", "--quick", "--json", str(out), timeout=900
    )  # five processes, one per configuration
    figures = json.loads(out.read_text())
    expected = {"seed-style", "seed", "default", "default fp32"} | ({"seed bf16"} if cpu_bf16 == "1" else set())
    assert set(figures["runs"]) == expected
    for run in figures["runs"].values():
        assert run["examples_per_s"] > 0 and 0 < run["mfu"] < 1 and run["peak_memory_gb"] > 0.2
    assert figures["runs"]["default fp32"]["dtype"] == "fp32"
    assert figures["runs"]["default"]["dtype"] == ("bf16" if cpu_bf16 == "1" else "fp32")
    # the baseline really is the seed's padding: every example costs 64 + 64 tokens
    assert figures["runs"]["seed-style"]["gradient_checkpointing"] is True
    assert len(figures["targets"]) == 7
    verdicts = [line for line in res.stdout.splitlines() if re.search(r"  (met|NOT met)( \(|$)", line)]
    skipped = [line for line in res.stdout.splitlines() if "skipped: this CPU has no bf16" in line]
    assert len(verdicts) + len(skipped) == 7 and len(skipped) == (cpu_bf16 == "0"), res.stdout
    assert ("fp32 only" in res.stdout) == (cpu_bf16 == "0")


def test_eval_speed_script_compares_batched_generation_with_the_seed(tmp_path):
    out = tmp_path / "eval.json"
    run_script("eval_speed.py", "--questions", "6", "--new-tokens", "3", "--batch-size", "4", "--json", str(out))
    figures = json.loads(out.read_text())
    assert figures["questions"] == 6 and figures["seed_style_answers_per_s"] > 0 and figures["speedup"] > 0
    # the CTranslate2 rows come from the same run, for each quantization this CPU can use
    assert {"int8", "float32"} <= set(figures["ctranslate2_answers_per_s"])
    assert all(v > 0 for v in figures["ctranslate2_vs_pytorch"].values())


def test_serve_load_script_answers_every_request(tmp_path):
    out = tmp_path / "serve.json"
    run_script(
        "serve_load.py", "--quick", "--requests", "12", "--concurrency", "12", "--rounds", "1", "--json", str(out)
    )
    native, openai_chat, unbatched, ct2 = json.loads(out.read_text())
    assert native["failures"] == openai_chat["failures"] == unbatched["failures"] == ct2["failures"] == 0
    assert ct2["engine"] == "ctranslate2" and ct2["requests_per_s"] > 0
    assert openai_chat["workload"] == "openai" and openai_chat["requests_per_s"] > 0
    # the same requests in fewer model calls when batching is on
    assert native["model_calls"] < unbatched["model_calls"]


def test_many_adapters_script_loads_and_evicts_without_failing_a_request(tmp_path):
    out = tmp_path / "many.json"
    run_script(
        "many_adapters.py", "--quick", "--adapters", "10", "--requests", "24", "--max-loaded", "3", "--json", str(out)
    )
    figures = json.loads(out.read_text())
    assert figures["failures"] == 0
    # every adapter asked for was loaded, and never more than 3 stayed: each load past 3 evicted one
    assert figures["loads"] >= figures["distinct"] and figures["loads"] - figures["evictions"] <= 3
    assert figures["cold_start_s"]["pytorch"] > 0 and figures["cold_start_s"]["ctranslate2"] > 0


@pytest.mark.ray
def test_ray_serve_script_serves_through_ray_and_adds_on_ray(tmp_path):
    """`serve --ray` from its command line, as a user starts it and stops it with Ctrl-C (the Ray
    tests build the app in-process): no request fails and every target has its verdict.
    `collection add --ray` is left to tests/retrieval/test_ray_add.py (from its command line too)."""
    pytest.importorskip("ray")
    out = tmp_path / "ray.json"
    res = run_script("ray_serve.py", "--quick", "--skip-add", "--json", str(out), timeout=600)
    figures = json.loads(out.read_text())
    serving = figures["serving"]
    assert serving["ray_failures"] == serving["rr_failures"] == serving["ray1_failures"] == 0
    assert serving["ray_loads"] >= 1 and serving["rr_loads"] >= 1
    for target in ("failures on Ray", "loads per 1,000 requests", "Ray path on one adapter"):
        assert re.search(rf"{target}.*\((goal[^)]*)\) (met|NOT met)", res.stdout), target


def test_serve_abuse_script_keeps_normal_clients_answered_under_attack(tmp_path):
    """A smoke run on a tiny model: the latency and memory goals need the real-size run (README),
    but no normal request may fail, /health must stay truthful and the metrics stay bounded."""
    out = tmp_path / "abuse.json"
    res = run_script("serve_abuse.py", "--quick", "--seconds", "3", "--clients", "2", "--json", str(out))
    figures = json.loads(out.read_text())
    assert figures["quiet"]["failures"] == figures["attack"]["failures"] == 0
    assert figures["quiet"]["requests"] > 0 and figures["attack"]["requests"] > 0
    assert set(figures["attack"]["attacks_sent"]) == {
        "50 MB chunked bodies",
        "20,000-prompt completions",
        "streams dropped midway",
        "bad parameters",
        "adapter POST/DELETE without the admin key",
        "random URLs and adapter names",
    }
    assert figures["health"]["truthful"] and figures["health"]["checks"] > 0
    assert figures["metrics"]["after"][0] < figures["metrics"]["before"][0] + 150  # not one series per URL
    verdicts = [line for line in res.stdout.splitlines() if re.search(r"  (met|NOT met)$", line)]
    assert len(verdicts) == 5, res.stdout


def test_retrieval_script_compares_the_stores_with_bm25s_and_rank_bm25(tmp_path):
    out = tmp_path / "retrieval.json"
    postgres = ["--postgres", os.environ["LORAQA_TEST_POSTGRES"]] if os.environ.get("LORAQA_TEST_POSTGRES") else []
    res = run_script("retrieval.py", "--scale", "1500", "--queries", "40", *postgres, "--json", str(out))
    results = json.loads(out.read_text())
    assert [r["data"] for r in results] == ["squad: squad_v1_mini.json", "synthetic 1,500"]
    for result in results:
        engines = {e["engine"]: e for e in result["engines"]}
        assert {"loraqa SQLite (FTS5)", "bm25s", "rank_bm25"} <= set(engines)
        for e in engines.values():
            assert 0 <= e["recall@1"] <= e["recall@5"] <= e["recall@20"] <= 100 and e["p95_ms"] >= e["p50_ms"] > 0
        assert engines["loraqa SQLite (FTS5)"]["recall@5"] >= 90  # every passage names its person
    assert "recall@5" in res.stdout and " vs best peer " in res.stdout


def test_long_documents_script_prints_every_target_with_a_verdict(tmp_path):
    out = tmp_path / "long.json"
    res = run_script("long_documents.py", "--quick", "--json", str(out))
    figures = json.loads(out.read_text())
    assert set(figures["lengths"]) == {"600", "1200"}
    for row in figures["lengths"].values():
        assert len(row["windows_by_decile"]) == len(row["cut_by_decile"]) == 10 and row["windows_per_question"] > 1
    assert figures["cost"]["batched"] > 0 and figures["cost"]["one_window_at_a_time"] > 0
    # the reader check sorts each short-passage answer into at most one of its three kinds
    check = figures["reader_check"]
    assert check["questions"] == 10 and 0 <= check["abstained_absent"] <= 100
    assert check["asked_persons_fact"] + check["other_buyers_fact"] + check["abstained_answerable"] <= 100
    assert "reader check (10 short passages" in res.stdout
    verdicts = [line for line in res.stdout.splitlines() if re.search(r"  (met|NOT met)$", line)]
    assert len(verdicts) == len(figures["targets"]) == 5, res.stdout


@pytest.fixture(scope="module")
def domains_workdir(tmp_path_factory):
    """routing.py's three-domain world (--quick), kept for combine.py to reuse."""
    return tmp_path_factory.mktemp("domains")


def test_routing_script_measures_both_profiles(tmp_path, domains_workdir):
    out = tmp_path / "routing.json"
    res = run_script("routing.py", "--quick", "--workdir", str(domains_workdir), "--json", str(out))
    figures = json.loads(out.read_text())
    for key in (
        "tfidf_with_passage",
        "tfidf_question_only",
        "embedding (trained base)_with_passage",
        "embedding (random-weight base)_question_only",
        "f1_routed",
        "f1_right_adapter",
    ):
        assert 0 <= figures[key] <= 100, key
    assert "routing accuracy with passages" in res.stdout


def test_combine_script_compares_every_method_with_the_own_adapters_and_routing(tmp_path, domains_workdir):
    """Reuses the routing test's world (its base and three adapters): only the combinations are new."""
    out = tmp_path / "combine.json"
    res = run_script(
        "combine.py", "--quick", "--workdir", str(domains_workdir), "--methods", "cat", "ties", "--json", str(out)
    )
    figures = json.loads(out.read_text())
    assert set(figures["scores"]) == {
        "people adapter",
        "purchases adapter",
        "pets adapter",
        "own adapter (given)",
        "auto routing",
        "cat (average)",
        "cat (sum)",
        "ties (average)",
        "ties (sum)",
    }
    assert figures["kept_of_own_f1"]["own adapter (given)"] == pytest.approx(100.0)
    for by_domain in figures["scores"].values():
        assert set(by_domain) == {"people", "purchases", "pets"}
        assert all(0 <= v["em"] <= v["f1"] <= 100 for v in by_domain.values())
    assert "best combination:" in res.stdout


def test_long_documents_reader_check_knows_the_other_buyers_fact():
    """The reader check counts answers that give the other buyer's colour, market or purchase; if
    it could not work them out, a reader that mixes people up would look merely wrong."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import long_documents

    context = (
        "Last spring Lire bought a red bicycle at the market of Jorvik. "
        "Kamo bought a yellow bicycle at the market of Hollin."
    )
    for question, mine, theirs in (
        ("What colour is the bicycle of Kamo?", "yellow", "red"),
        ("Where did Lire buy the bicycle?", "Jorvik", "Hollin"),
        ("What did Kamo buy?", "a yellow bicycle", "a red bicycle"),
    ):
        row = {"context": context, "question": question, "answers": {"text": [mine], "answer_start": [0]}}
        assert long_documents.other_buyers_fact(row) == theirs
    # not a buyers passage: nothing to compare with
    assert (
        long_documents.other_buyers_fact(
            {
                "context": "Kamo was born in Elst.",
                "question": "Where was Kamo born?",
                "answers": {"text": ["Elst"], "answer_start": [16]},
            }
        )
        is None
    )


def test_reader_binding_script_saves_a_reader_long_documents_can_adapt(tmp_path):
    """The reader it pre-trains is what `long_documents.py --base` adapts: it must load with its
    tokenizer, and every name must be one token (telling people apart is then one token's match)."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    out, saved = tmp_path / "binding.json", tmp_path / "reader"
    res = run_script("reader_binding.py", "--quick", "--json", str(out), "--save", str(saved))
    history = json.loads(out.read_text())["history"]
    assert [h["step"] for h in history] == [10, 20]
    for check in history[-1]["checks"].values():  # each answer is counted as at most one kind
        assert check["right"] + check["abstained"] + check["other_phrase"] <= 100
    assert "present among others" in res.stdout
    tokenizer = AutoTokenizer.from_pretrained(saved)
    assert AutoModelForSeq2SeqLM.from_pretrained(saved).config.vocab_size == len(tokenizer)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import reader_binding

    assert all(len(tokenizer(" " + n, add_special_tokens=False)["input_ids"]) == 1 for n in reader_binding.names())


def test_domains_script_measures_every_mode_and_its_peers(tmp_path):
    out = tmp_path / "domains.json"
    res = run_script("domains.py", "--data", str(SQUAD_V1), "--quick", "--json", str(out))
    [got] = json.loads(out.read_text())["sets"]
    for scope in ("whole", "per_document"):
        assert set(got[scope]) == {"lexical", "dense", "hybrid"}
        assert all(
            m["recall@5"] >= 90 for m in got[scope].values()
        )  # each fixture question shares words with its passage
    # the exact fp32 search over the same parts is what loraqa's dense side is held to
    assert set(got["peers"]) == {"bm25s", "sentence-transformers + NumPy", "sentence-transformers + NumPy, parts"}
    assert got["embedding"]["ratio"] > 0 and got["embedding"]["ratio to whole passages"] > 0
    assert got["latency"]["hybrid"]["p95_ms"] >= got["latency"]["hybrid"]["p50_ms"] > 0
    # every installed engine timed on the same passages: the figures that chose the default
    assert set(got["engines_passages_per_s"]) == {"onnxruntime", "ctranslate2", "sentence-transformers"}
    assert all(rate > 0 for rate in got["engines_passages_per_s"].values())
    assert "hybrid R@5 vs the better side" in res.stdout


def test_postgres_scale_script_measures_ingestion_and_every_mode_at_a_size(tmp_path):
    """benchmarks/postgres_scale.py on the SQuAD fixture's contexts, grown to 300 passages."""
    server = os.environ.get("LORAQA_TEST_POSTGRES")
    if not server:
        if os.environ.get("CI"):
            raise RuntimeError("LORAQA_TEST_POSTGRES is not set: .ci/run must start PostgreSQL for the tests")
        pytest.skip("no PostgreSQL server (set LORAQA_TEST_POSTGRES, as .ci/run does)")
    rows = json.loads(SQUAD_V1.read_text())["data"]
    docs = tmp_path / "docs"
    docs.mkdir()
    questions = []
    for i, article in enumerate(rows):
        (docs / f"a{i}.txt").write_text("\n\n".join(p["context"] for p in article["paragraphs"]))
        questions += [{"question": qa["question"]} for p in article["paragraphs"] for qa in p["qas"]]
    qpath = tmp_path / "questions.jsonl"
    qpath.write_text("".join(json.dumps(q) + "\n" for q in questions))
    res = run_script(
        "postgres_scale.py",
        "--postgres",
        server,
        "--docs",
        str(docs),
        "--questions",
        str(qpath),
        "--scale",
        "300",
        "--queries",
        "10",
    )
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["ingest_lexical"]["documents"] == len(rows) and got["ingest_lexical"]["passages_per_s"] > 0
    assert got["scaled"]["passages"] >= 300 > got["real"]["passages"]
    for mode in ("lexical", "dense", "hybrid"):
        assert got["scaled"][mode]["p95_ms"] >= got["scaled"][mode]["p50_ms"] > 0


def test_a_script_s_failure_and_output_reach_its_test_through_the_warm_interpreter(tmp_path):
    """If the forked runs lost a script's exit code or output, every test above would pass on a
    script that crashed."""
    for body, code, said in (
        ("import sys; print('figures'); sys.exit(3)", 3, "figures"),
        ("import sys; print('half', flush=True); raise ValueError('broken script')", 1, "ValueError: broken script"),
        ("raise SystemExit('one line of why')", 1, "one line of why"),
        ("import sys, os; print(os.getcwd(), sys.argv[1:], sys.path[0])", 0, f"{tmp_path} ['--x'] {tmp_path}"),
    ):
        script = tmp_path / "script.py"
        script.write_text(body)
        res = WARM.run(script, ["--x"], tmp_path, dict(os.environ), tmp_path, timeout=60)
        assert res.returncode == code and said in res.stdout + res.stderr, (body, res)
