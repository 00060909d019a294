"""A passage's vectors: one for each part of it of up to PART_CHARS characters (cut at sentence
ends, as passages are cut from documents); a passage's cosine with a query is its best part's.

Why parts: a sentence embedder such as all-MiniLM-L6-v2 is trained on sentence pairs, and one
mean-pooled vector of a 1,000-character passage blurs the sentence a question asks about. Measured
by benchmarks/domains.py's sets (whole collection, R@5 of dense search): clinical papers 51.0 ->
59.6, stories 48.1 -> 55.6, policies 11.4 -> 11.4 with parts of up to 400 characters (on cached
candidates, 600 gave less, 300 a little more for 1.3x the vectors), and hybrid search over lexical
alone on average +1.19 -> +2.13 points. Embedding costs about the same per passage (more texts,
each shorter); a collection holds about 2.6 vectors a passage.

A collection records its part size with its embedder (`parts`); one made before parts has one
vector a passage (`parts` absent) and keeps that until `collection embed --replace`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from loraqa.documents.document import Document
from loraqa.documents.passages import passage_spans
from loraqa.errors import UsageError

PART_CHARS = 400


def parts(text: str, part_chars: int | None) -> list[str]:
    """The texts a passage is embedded as: itself when part_chars is None (one vector)."""
    if not part_chars or len(text) <= part_chars:
        return [text]
    spans = passage_spans(Document(source="", title="", text=text, id="part"), max_chars=part_chars, overlap=0)
    return [text[start:end] for start, end in spans] or [text]


def embed_passages(embedder, texts: Sequence[str], part_chars: int | None) -> list[np.ndarray]:
    """For each passage text, its parts' vectors (an array of parts x dimension), all embedded in
    one call (the embedder batches them by length)."""
    pieces = [parts(text, part_chars) for text in texts]
    flat = [piece for own in pieces for piece in own]
    vectors = np.asarray(embedder.embed(flat), dtype=np.float32) if flat else np.zeros((0, 0), dtype=np.float32)
    out, at = [], 0
    for own in pieces:
        out.append(vectors[at : at + len(own)])
        at += len(own)
    return out


def per_passage(vectors, count: int, dim: int) -> list[np.ndarray]:
    """The vectors given for `count` passages as one array (parts x dim) per passage: either one
    array of count x dim (a vector each) or a sequence of count arrays. A wrong count or dimension
    is an error, never a silently misplaced vector."""
    if isinstance(vectors, np.ndarray) and vectors.ndim == 2:
        own = [vectors[i : i + 1] for i in range(len(vectors))]
    else:
        own = [np.atleast_2d(np.asarray(v, dtype=np.float32)) for v in vectors]
    if len(own) != count or any(v.ndim != 2 or v.shape[1] != dim or not len(v) for v in own):
        shapes = sorted({tuple(np.shape(v)) for v in own})[:3]
        raise UsageError(f"vectors of shapes {shapes} for {count} passages of a {dim}-dimension collection")
    return [np.asarray(v, dtype=np.float32) for v in own]


def same_vectors(recorded: dict | None, given: dict | None) -> bool:
    """Whether vectors made as `given` says (model and part size) can stand beside `recorded`'s."""
    return (
        recorded is not None
        and given is not None
        and recorded["fingerprint"] == given["fingerprint"]
        and recorded.get("parts") == given.get("parts")
    )
