"""Shared fixtures: a tokenizer trained on the fixture text and a tiny random T5 saved locally.

No download happens anywhere in the tests: models are built from configs and the tokenizer
is trained here, from the hand-written SQuAD fixture.
"""

from __future__ import annotations

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
