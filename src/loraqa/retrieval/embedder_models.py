"""What every embedder engine shares: finding a sentence-transformers folder, its fingerprint,
dimension, pooling and tokenizer, and the int8 engines' common loop (batches of like lengths,
pooling and normalising done here, as the folder's modules say)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

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


def pooling_of(folder: Path) -> tuple[str, bool]:
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


def max_length_of(folder: Path) -> int:
    try:
        return int(json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return 256


def unit_vectors(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class TokenizedEmbedder:
    """What the int8 engines share: the folder's tokenizer read with the `tokenizers` library,
    batches of like lengths, pooling and normalising done here as the folder's modules say (the
    engines return the transformer's last hidden states only)."""

    def __init__(self, name: str, folder: Path):
        from tokenizers import Tokenizer

        self.name, self.folder = name, folder
        self.fingerprint, self.dim = fingerprint(folder)
        self.pooling, self.normalise = pooling_of(folder)
        if not (folder / "tokenizer.json").is_file():
            raise UsageError(f"{folder} has no tokenizer.json: use --embedder-engine sentence-transformers")
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()  # a saved fixed padding would be pooled as text
        self.tokenizer.enable_truncation(max_length_of(folder))
        self.lock = threading.Lock()  # one engine call at a time (it uses every thread it was given)
        self.batch = BATCH  # texts per engine call

    def hidden_states(self, ids: list[list[int]]) -> np.ndarray:
        """(batch, longest, dim) float32 last hidden states; positions past a row's length are ignored."""
        raise NotImplementedError

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.pooled(texts, self.hidden_states)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self.pooled(texts, self.hidden_states)

    def pooled(
        self, texts: list[str], hidden_states: Callable[[list[list[int]]], np.ndarray], workers: int = 1
    ) -> np.ndarray:
        """The texts' vectors, their hidden states made by `hidden_states`: one call at a time (a
        call uses every thread it was given), or `workers` calls at once, each on one thread."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encodings = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))  # batches of like lengths
        chunks = [order[at : at + self.batch] for at in range(0, len(order), self.batch)]

        def vectors(chunk: list[int]) -> np.ndarray:
            ids = [encodings[i].ids for i in chunk]
            if workers > 1:
                return self.pool(hidden_states(ids), ids)
            with self.lock:
                hidden = hidden_states(ids)
            return self.pool(hidden, ids)

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                done = list(pool.map(vectors, chunks))
        else:
            done = [vectors(chunk) for chunk in chunks]
        for chunk, pooled in zip(chunks, done):
            out[chunk] = pooled
        return unit_vectors(out) if self.normalise else out

    def pool(self, hidden: np.ndarray, ids: list[list[int]]) -> np.ndarray:
        """A vector for each row of a batch's hidden states, as the folder's pooling says."""
        if self.pooling == "cls":
            return hidden[:, 0]
        lengths = np.array([len(x) for x in ids], dtype=np.float32)
        mask = np.arange(hidden.shape[1])[None, :] < lengths[:, None]
        return (hidden * mask[..., None]).sum(1) / lengths[:, None]


def embedder_cache() -> Path:
    """Where converted embedders are kept, one folder per fingerprint and engine."""
    return Path(os.environ.get("LORAQA_EMBEDDER_CACHE", Path.home() / ".cache" / "loraqa" / "embedders"))
