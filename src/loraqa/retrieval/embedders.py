"""Sentence embedders for dense search: a sentence-transformers model, run by CTranslate2 in int8
(fast on CPUs) or by sentence-transformers itself.

A collection records its embedder by the name it was given and a fingerprint (the vectors'
dimension and a hash of the model's config, tokenizer and pooling files): a process that searches
loads the model by that name (or the one it is told) and refuses, in one line, a model with
another fingerprint, whose vectors would not be comparable. Both engines read the same
sentence-transformers folder and share the fingerprint: a collection embedded by one is searched
by the other (their vectors agree to a cosine of 0.996 or more; benchmarks/domains.py measures
recall with each).

`ctranslate2` (the default where the package is installed): the folder's transformer converted
once to an int8 CTranslate2 Encoder (kept in ~/.cache/loraqa/embedders/FINGERPRINT, converting
needs transformers and torch once), its tokenizer read with the `tokenizers` library, pooling and
normalisation done here as the folder's modules say. Searching then imports neither torch nor
transformers. `sentence-transformers`: the model run in fp32 by the library.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from loraqa import optional
from loraqa.errors import LoraqaError, UsageError
from loraqa.hub import looks_like_path

BATCH = 32
# what the fingerprint covers: the files that decide what a text's vector is
FINGERPRINT_FILES = (
    "config.json",
    "tokenizer.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


class Embedder(Protocol):
    name: str  # as given
    dim: int
    fingerprint: str

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32 vectors of unit length."""


def model_folder(name: str, what: str = "embedder", option: str = "--embedder") -> Path:
    """The local folder of a sentence-transformers model: a path, or a hub name already in the
    local cache (nothing is downloaded here when the Hub is unreachable). what/option: how error
    lines name the model and where it was given."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder.resolve()

    if looks_like_path(name):
        raise UsageError(f"{what} not found: {name}; {option} takes a sentence-transformers folder or a hub name")
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                name, allow_patterns=[*FINGERPRINT_FILES, "*.safetensors", "1_Pooling/*", "2_Normalize/*"]
            )
        )
    except Exception as exc:  # noqa: BLE001 - the hub raises many types; all mean "not here"
        raise LoraqaError(
            f"could not load the {what} '{name}' ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}); "
            "the Hugging Face Hub may be unreachable: pass a local sentence-transformers folder with "
            f"{option} PATH"
        ) from None


def fingerprint(folder: Path) -> tuple[str, int]:
    """(fingerprint, dimension) of a sentence-transformers folder."""
    digest = hashlib.sha256()
    for rel in FINGERPRINT_FILES:
        path = folder / rel
        if path.is_file():
            digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    dim = _dimension(folder)
    return f"{dim}-{digest.hexdigest()[:24]}", dim


def _dimension(folder: Path) -> int:
    for rel, key in (("1_Pooling/config.json", "word_embedding_dimension"), ("config.json", "hidden_size")):
        try:
            value = json.loads((folder / rel).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError):
            continue
        if isinstance(value, int) and value > 0:
            return value
    raise UsageError(
        f"{folder} is not a sentence-transformers model (no dimension in 1_Pooling/config.json or config.json)"
    )


def _pooling(folder: Path) -> tuple[str, bool]:
    """('mean' or 'cls', normalise) as the folder's modules say (mean and normalised by default)."""
    try:
        config = json.loads((folder / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
        mode = "cls" if config.get("pooling_mode_cls_token") else "mean"
    except (OSError, ValueError):
        mode = "mean"
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        normalise = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
    except (OSError, ValueError):
        normalise = True
    return mode, normalise


def _max_length(folder: Path) -> int:
    try:
        return int(json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return 256


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class CT2Embedder:
    """The model's transformer as an int8 CTranslate2 Encoder; tokenizing, pooling and
    normalising by hand (no torch, no transformers once converted)."""

    def __init__(self, name: str, folder: Path, threads: int = 0):
        ct2 = optional.require("ctranslate2", "the CTranslate2 embedder")
        from tokenizers import Tokenizer

        self.name, self.folder = name, folder
        self.fingerprint, self.dim = fingerprint(folder)
        self.pooling, self.normalise = _pooling(folder)
        if not (folder / "tokenizer.json").is_file():
            raise UsageError(f"{folder} has no tokenizer.json: use --embedder-engine sentence-transformers")
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()  # a saved fixed padding would be pooled as text
        self.tokenizer.enable_truncation(_max_length(folder))
        converted = _converted(folder, self.fingerprint)
        self.encoder = ct2.Encoder(
            str(converted), device="cpu", compute_type="int8", intra_threads=threads or min(4, os.cpu_count() or 1)
        )
        self.lock = threading.Lock()  # one encoder call at a time (it uses every thread it was given)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encodings = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))  # batches of like lengths
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for at in range(0, len(order), BATCH):
            chunk = order[at : at + BATCH]
            ids = [encodings[i].ids for i in chunk]
            with self.lock:
                hidden = np.asarray(self.encoder.forward_batch(ids).last_hidden_state, dtype=np.float32)
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                lengths = np.array([len(x) for x in ids], dtype=np.float32)
                mask = np.arange(hidden.shape[1])[None, :] < lengths[:, None]
                pooled = (hidden * mask[..., None]).sum(1) / lengths[:, None]
            out[chunk] = pooled
        return _unit(out) if self.normalise else out


def _converted(folder: Path, fp: str) -> Path:
    """The folder's transformer converted to CTranslate2 int8, once per fingerprint."""
    cache = Path(os.environ.get("LORAQA_EMBEDDER_CACHE", Path.home() / ".cache" / "loraqa" / "embedders")) / fp
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


_LOADED: dict[tuple[str, str], Embedder] = {}
_LOCK = threading.Lock()


EMBEDDERS = {"ctranslate2": CT2Embedder, "sentence-transformers": SentenceTransformersEmbedder}


def default_engine() -> str:
    return "ctranslate2" if optional.is_installed("ctranslate2") else "sentence-transformers"


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
