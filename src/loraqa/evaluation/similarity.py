"""Semantic answer similarity (SAS, Risch et al. 2021): is the generated answer the reference in
other words? "5 mg" against "five milligrams" is 0 for EM and F1 and close to 1 here.

The model is the user's, from a local folder (`--similarity-model PATH`), loaded with
`sentence-transformers`: a cross-encoder (a sequence-classification model with one output,
scored on the (reference, answer) pair; the SAS paper's choice) or a sentence-embedding model
(cosine of the two embeddings, below 0 counted as 0). Off by default: it is a second model to
load and run. An answer that EM counts as the reference ("paris." for "Paris") scores 1, so SAS
is never below EM; a question with no answer scores 1 for an empty prediction, else 0, as SQuAD
v2's F1 does; an empty prediction to an answerable question scores 0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loraqa.errors import LoraqaError, option
from loraqa.evaluation.metrics import normalize_answer
from loraqa.hub import looks_like_path, use_cache_only_if_offline
from loraqa.modeling.files import refuse_pickle
from loraqa.optional import check


def _is_cross_encoder(folder: Path) -> bool:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or [])
        and config.get("num_labels", len(config.get("id2label") or {0: 0})) == 1
    )


class AnswerSimilarity:
    def __init__(self, name: str, device: str = "cpu", batch_size: int = 64):
        check("sentence_transformers", f"{option('similarity_model')}")  # names the pip extra
        online = use_cache_only_if_offline()
        folder = Path(name).expanduser()
        if looks_like_path(name) and not folder.is_dir():
            raise LoraqaError(
                f"similarity model not found: {name}; {option('similarity_model')} takes a local "
                "sentence-transformers or cross-encoder folder"
            )
        refuse_pickle(folder, "similarity model", allow_pickle=False)
        self.cross = folder.is_dir() and _is_cross_encoder(folder)
        self.name, self.batch_size = name, batch_size
        from sentence_transformers import CrossEncoder, SentenceTransformer

        try:
            self.model: Any = (CrossEncoder if self.cross else SentenceTransformer)(name, device=device)
        except Exception as exc:  # noqa: BLE001 - the loaders raise many types for an unusable folder
            where = "" if online or looks_like_path(name) else " (the Hugging Face Hub is unreachable)"
            raise LoraqaError(
                f"could not load the similarity model {name}{where}: "
                f"{str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}; pass a "
                f"local folder with {option('similarity_model')}"
            ) from None

    def scores(self, predictions: list[str], references: list[list[str]]) -> list[float]:
        """Each prediction's similarity (0..1) to its closest reference."""
        pairs = [
            (p, r)
            for p, refs in zip(predictions, references)
            for r in refs
            if normalize_answer(p) and normalize_answer(r) and normalize_answer(p) != normalize_answer(r)
        ]
        sims = dict(zip(pairs, self._similarities(pairs))) if pairs else {}
        out = []
        for p, refs in zip(predictions, references):
            answerable = [r for r in refs if normalize_answer(r)]
            if not answerable:
                out.append(float(not normalize_answer(p)))
            elif not normalize_answer(p):
                out.append(0.0)
            else:
                out.append(max(sims.get((p, r), 1.0) for r in answerable))  # 1: the same answer by EM's rules
        return out

    def _similarities(self, pairs: list[tuple[str, str]]) -> list[float]:
        pairs = list(dict.fromkeys(pairs))
        if self.cross:  # one output, through a sigmoid (CrossEncoder's default for one label)
            values = self.model.predict([(r, p) for p, r in pairs], batch_size=self.batch_size, show_progress_bar=False)
            got = [float(v) for v in values]
        else:
            texts = list(dict.fromkeys(t for pair in pairs for t in pair))
            vectors = self.model.encode(
                texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
            )
            index = {t: v for t, v in zip(texts, vectors)}
            got = [float(index[p] @ index[r]) for p, r in pairs]
        return [min(max(v, 0.0), 1.0) for v in got]


def add_similarity(items: list[dict], summary: dict, similarity: AnswerSimilarity) -> None:
    """Each item's `sas` (0..1) and the summary's mean `sas` (percent) and its model."""
    values = similarity.scores([i["prediction"] for i in items], [i["references"] for i in items])
    for item, v in zip(items, values):
        item["sas"] = round(v, 6)
    summary["sas"] = 100.0 * sum(values) / max(len(values), 1)
    summary["sas_model"] = similarity.name
