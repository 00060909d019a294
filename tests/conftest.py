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

FIXTURES = Path(__file__).parent / "fixtures"
SQUAD_V1 = FIXTURES / "squad_v1_mini.json"


@pytest.fixture(scope="session")
def squad_rows():
    from loraqa.data import load_rows

    return load_rows(str(SQUAD_V1))


@pytest.fixture(scope="session")
def tokenizer(squad_rows):
    from loraqa.prompts import TEMPLATES
    from loraqa.synthetic import train_tokenizer

    texts = [r["context"] for r in squad_rows] + [r["question"] for r in squad_rows]
    texts += list(TEMPLATES.values()) + ["unanswerable", "Read this and answer the question."]
    return train_tokenizer(texts, vocab_size=600)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    from loraqa.synthetic import save_model_dir

    return save_model_dir(tmp_path_factory.mktemp("tiny-t5"), "tiny", tokenizer=tokenizer)


@pytest.fixture(scope="session")
def nodrop_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny T5 without dropout: small LoRA runs can memorise answers exactly."""
    from loraqa.synthetic import save_model_dir

    return save_model_dir(tmp_path_factory.mktemp("tiny-t5-nodrop"), "tiny", tokenizer=tokenizer, dropout=0.0)


MEMORISE = ["train.batch_size=8", "train.learning_rate=3e-3", "train.lr_scheduler=constant", "train.warmup_ratio=0",
            "lora.r=16", "lora.alpha=32", "lora.dropout=0", "data.split_by=random", "data.test_size=0.2",
            "data.num_samples=null", "train.eval_steps=0", "train.save_steps=1000", "track.report_to=none",
            "model.dtype=fp32"]


def train_memoriser(model_dir, rows, workdir: Path, steps: int = 250):
    """Train a LoRA adapter on `rows` until it repeats their first answers; returns the TrainResult."""
    import json as _json

    from loraqa.config import load_config
    from loraqa.train import train

    data = workdir / "data.jsonl"
    data.write_text("".join(_json.dumps(r) + "\n" for r in rows))
    cfg = load_config("default", sets=[f"train.max_steps={steps}", *MEMORISE],
                      overrides={"model": {"name": str(model_dir)}, "data": {"source": str(data)}})
    return train(cfg, output=str(workdir / "run"))


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
def answerer(two_adapters):
    from loraqa.answer import Answerer

    return Answerer({"answers": str(two_adapters["answers"]), "titles": str(two_adapters["titles"])}, dtype="fp32")
