"""Sentence embedders for dense search: a sentence-transformers model run in int8 by onnxruntime
or CTranslate2 (fast on CPUs), or in fp32 by sentence-transformers itself.

A collection records its embedder by the name it was given and a fingerprint (the vectors'
dimension and a hash of the model's config, tokenizer and pooling files): a process that searches
loads the model by that name (or the one it is told) and refuses, in one line, a model with
another fingerprint, whose vectors would not be comparable. Every engine reads the same
sentence-transformers folder and shares the fingerprint: a collection embedded by one is searched
by another (their vectors agree to a cosine of 0.99 or more; benchmarks/domains.py measures
recall with each).

`onnxruntime` (the default where the package is installed) and `ctranslate2` (the default where
only it is): the folder's transformer converted once to int8 (kept in
~/.cache/loraqa/embedders/, converting needs transformers and torch once), its tokenizer read with
the `tokenizers` library, pooling and normalisation done here as the folder's modules say.
Searching then imports neither torch nor transformers. `sentence-transformers`: the model run in
fp32 by the library.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from loraqa import optional
from loraqa.errors import LoraqaError, UsageError
from loraqa.retrieval.embedder_models import BATCH, TokenizedEmbedder, embedder_cache, fingerprint, model_folder
from loraqa.retrieval.onnx_embedder import ONNXEmbedder

__all__ = ["EMBEDDERS", "Embedder", "default_engine", "load_embedder", "model_folder"]


class Embedder(Protocol):
    name: str  # as given
    dim: int
    fingerprint: str

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32 vectors of unit length: passages, as fast as the engine goes."""

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """The same for what is compared with them (questions): as exact as the engine offers,
        since a query is one short text and its error would move every score of a search."""


class CT2Embedder(TokenizedEmbedder):
    """The model's transformer as an int8 CTranslate2 Encoder (no torch, no transformers once
    converted)."""

    def __init__(self, name: str, folder: Path, threads: int = 0):
        ct2 = optional.require("ctranslate2", "the CTranslate2 embedder")
        super().__init__(name, folder)
        converted = _converted(folder, self.fingerprint)
        self.encoder = ct2.Encoder(
            str(converted), device="cpu", compute_type="int8", intra_threads=threads or min(4, os.cpu_count() or 1)
        )

    def hidden_states(self, ids: list[list[int]]) -> np.ndarray:
        return np.asarray(self.encoder.forward_batch(ids).last_hidden_state, dtype=np.float32)


def _converted(folder: Path, fp: str) -> Path:
    """The folder's transformer converted to CTranslate2 int8, once per fingerprint."""
    cache = embedder_cache() / fp
    if (cache / "model.bin").is_file():
        return cache
    import shutil

    import ctranslate2

    tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        ctranslate2.converters.TransformersConverter(str(folder)).convert(str(tmp), quantization="int8", force=True)
        os.replace(tmp, cache)
    except Exception as exc:  # noqa: BLE001 - the converter raises many types for a model it cannot take
        if (cache / "model.bin").is_file():  # another process converted it meanwhile
            return cache
        raise LoraqaError(
            f"CTranslate2 cannot convert the embedder {folder.name} ({str(exc).splitlines()[0][:120]}); "
            "use --embedder-engine sentence-transformers"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cache


class SentenceTransformersEmbedder:
    """The model run by sentence-transformers in fp32 (torch)."""

    def __init__(self, name: str, folder: Path):
        optional.check("sentence_transformers", "the sentence-transformers embedder")
        from sentence_transformers import SentenceTransformer

        self.name, self.folder = name, folder
        self.fingerprint, self.dim = fingerprint(folder)
        self.model = SentenceTransformer(str(folder), device="cpu")
        self.lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self.lock:
            vectors = self.model.encode(
                list(texts), batch_size=BATCH, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True
            )
        return vectors.astype(np.float32)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self.embed(texts)


_LOADED: dict[tuple[str, str], Embedder] = {}
_LOCK = threading.Lock()


EMBEDDERS: dict[str, Callable[[str, Path], Embedder]] = {
    "onnxruntime": ONNXEmbedder,
    "ctranslate2": CT2Embedder,
    "sentence-transformers": SentenceTransformersEmbedder,
}


# each engine's package, fastest first (benchmarks/domains.py measures them on the same passages)
ENGINE_PACKAGES = {
    "onnxruntime": "onnxruntime",
    "ctranslate2": "ctranslate2",
    "sentence-transformers": "sentence_transformers",
}


def installed_engines() -> list[str]:
    return [engine for engine, package in ENGINE_PACKAGES.items() if optional.is_installed(package)]


def default_engine() -> str:
    """The fastest engine installed."""
    return next(iter(installed_engines()), "sentence-transformers")


def load_embedder(
    name: str, engine: str | None = None, expect: str | None = None, option: str = "--embedder"
) -> Embedder:
    """The embedder `name` (a folder or hub name), loaded once per process and engine; expect: the
    fingerprint a collection recorded (a model that differs is refused); option: where the name
    was given, for error lines."""
    engine = engine or default_engine()
    if engine not in EMBEDDERS:
        raise UsageError(f"unknown embedder engine {engine!r}; use {' or '.join(EMBEDDERS)}")
    with _LOCK:
        key = (name, engine)
        if key not in _LOADED:
            folder = model_folder(name, option=option)
            _LOADED[key] = EMBEDDERS[engine](name, folder)
        embedder = _LOADED[key]
    if expect is not None and embedder.fingerprint != expect:
        raise UsageError(
            f"the embedder {name} is not the model this collection's vectors were made with (fingerprint "
            f"{embedder.fingerprint}, the collection's {expect}); give that model with --embedder, or "
            "re-embed with `loraqa collection embed NAME --embedder MODEL --replace`"
        )
    return embedder
