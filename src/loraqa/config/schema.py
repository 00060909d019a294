"""The configuration's shape: grouped dataclasses whose fields carry their help text and choices.

`loraqa config --keys` prints the help; the checks read the choices. Nothing here reads files
or validates values (loading.py and checks.py do).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


def _f(default: Any, help: str, choices: tuple | None = None):
    """A dataclass field carrying its help text (shown by `loraqa config --keys`)."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    name: str = _f("google/flan-t5-small", "Hub id or local directory of any AutoModelForSeq2SeqLM.")
    dtype: str = _f(
        "auto",
        "Weights/compute precision: auto (bf16 where the hardware has it, else fp32), fp32, bf16. fp16 is refused for T5 (NaN losses).",
        ("auto", "fp32", "bf16", "fp16"),
    )
    quantization: str = _f(
        "none", "Load the frozen base in 8bit or 4bit with bitsandbytes (CUDA only).", ("none", "8bit", "4bit")
    )
    device: str = _f("auto", "Where to train: auto (CUDA if present, else CPU), cpu, cuda.", ("auto", "cpu", "cuda"))
    dropout: float | None = _f(
        None, "Dropout inside the frozen base model; null keeps the checkpoint's (0.1 for flan-t5)."
    )
    attention: str = _f(
        "auto",
        "Attention kernel: auto (sdpa on CUDA; fused on CPU, measured fastest there), eager, sdpa, fused (the position bias and mask added inside the score GEMM).",
        ("auto", "eager", "sdpa", "fused"),
    )
    fast_kernels: bool = _f(
        True,
        "Train through loraqa's fused LoRA, GELU and RMS-norm forwards (same results as the library's, tested; measured faster). false: the library's own code.",
    )
    allow_pickle: bool = _f(
        False, "Allow loading pickle (.bin/.pt) model or adapter weights, which can run code. Only for files you trust."
    )


@dataclass
class LoraSection:
    r: int = _f(8, "LoRA rank.")
    alpha: int = _f(16, "LoRA scaling numerator (scale = alpha / r, or alpha / sqrt(r) with rslora).")
    dropout: float = _f(0.05, "Dropout on the LoRA branch input.")
    target_modules: list[str] = _f(
        ["q", "v"], "Names of the linear layers that get adapters (T5: q k v o wi_0 wi_1 wo)."
    )
    bias: str = _f("none", "Which biases train: none, all, lora_only.", ("none", "all", "lora_only"))
    use_rslora: bool = _f(False, "Rank-stabilised scaling alpha / sqrt(r).")
    use_dora: bool = _f(False, "Weight-decomposed LoRA (DoRA).")


@dataclass
class DataConfig:
    source: str = _f(
        "squad",
        "Hub dataset name (squad, squad_v2, ...) or a local file: official SQuAD JSON, JSONL, JSON, CSV or Parquet.",
    )
    num_samples: int | None = _f(None, "How many examples to draw (seeded shuffle) before splitting; null for all.")
    test_size: float = _f(0.2, "Share of the sampled examples held out for evaluation (0 < x < 1).")
    seed: int = _f(42, "Seed for sampling and splitting.")
    task: str = _f(
        "qa",
        "qa: answer questions from passages. question_generation: the rows turned around, passage + answer -> question (the squad template becomes question_generation's own), for `loraqa synth --generator local`.",
        ("qa", "question_generation"),
    )
    split_by: str = _f(
        "random",
        "random: split rows; context: keep all questions on one passage on the same side; document: keep each document's questions on one side (rows' `document` field, e.g. from `loraqa synth`; else their passage).",
        ("random", "context", "document"),
    )
    template: str = _f(
        "squad", "Prompt template: a name (squad, question, seed) or a string with {question} and optionally {context}."
    )
    max_source_length: int = _f(
        512,
        "Source window in tokens. Longer passages are read in overlapping windows (training: the window around the answer).",
    )
    doc_stride: int | None = _f(
        None,
        "Overlap in tokens between consecutive windows of a passage longer than the window; null: a third of max_source_length (128 of 384). At most half of max_source_length.",
    )
    negative_windows: int = _f(
        0,
        "Training: add up to N windows of a long passage that do not hold the answer, labelled with unanswerable_text, so the model learns to abstain per window.",
    )
    max_target_length: int = _f(32, "Longest answer in tokens; longer answers are truncated (counted).")
    unanswerable_text: str = _f(
        "unanswerable", "Target text for questions with no answer (SQuAD v2, windows without the answer)."
    )

    @property
    def window_overlap(self) -> int:
        """data.doc_stride, or a third of the window when it is left to loraqa."""
        return self.doc_stride if self.doc_stride is not None else self.max_source_length // 3


@dataclass
class TrainConfig:
    batch_size: int = _f(16, "Examples per device per step.")
    grad_accum: int = _f(1, "Gradient accumulation steps.")
    fp32_cpu_micro_batch: int | None = _f(
        None,
        "When training in fp32 on a CPU, take each step's batch_size x grad_accum examples in micro-batches of this size (the same update; fp32 activations take twice bf16's memory). Ignored unless smaller than batch_size and dividing the step; null: batch_size as given.",
    )
    learning_rate: float = _f(5e-4, "Peak learning rate.")
    epochs: float = _f(3.0, "Training epochs (ignored when max_steps > 0).")
    max_steps: int = _f(-1, "Stop after this many optimizer steps; -1 to train for `epochs`.")
    warmup_ratio: float = _f(0.03, "Share of the steps with linear warmup.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm.")
    lr_scheduler: str = _f("linear", "transformers scheduler name (linear, cosine, constant, ...).")
    eval_steps: int = _f(500, "Evaluate every N steps (0: never during training).")
    save_steps: int = _f(500, "Checkpoint every N steps.")
    save_total_limit: int = _f(2, "Keep at most this many checkpoints.")
    logging_steps: int = _f(50, "Log every N steps.")
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass to save memory.")
    group_by_length: bool = _f(True, "Batch examples of similar length together (less padding).")
    seed: int = _f(42, "Seed for initialisation, dropout and data order.")
    num_workers: int = _f(0, "DataLoader worker processes.")
    early_stopping_patience: int = _f(0, "Stop after this many evaluations without a better F1 (0: never).")


@dataclass
class EvalConfig:
    max_new_tokens: int = _f(32, "Longest generated answer in tokens (explicit: never the silent default of 20).")
    batch_size: int = _f(
        16,
        "Windows (one per question for short passages) per generation batch (16 was fastest on a 2-core CPU; GPUs like more).",
    )
    num_beams: int = _f(1, "Beam width for generation (1 = greedy).")
    subset: int | None = _f(200, "Held-out questions answered at each evaluation during training (null: all).")
    extractive: bool = _f(
        False,
        "Constrain decoding to spans of the passage window (or the no-answer text): every answer is a quote of the document.",
    )


@dataclass
class RetrievalConfig:
    top_k: int = _f(5, "Passages of a collection read for a question asked without a passage (retrieved by BM25).")
    min_score: float = _f(
        0.0,
        "Abstain without reading when no passage scores above this (BM25, lexical mode only; 0: any match is read).",
    )
    passage_weight: float = _f(
        1.0,
        "How much a passage's search score counts beside its answer's: the answer chosen maximises answer log-probability + weight * log(passage score / best passage score) (0: the reader's score alone).",
    )
    mode: str = _f(
        "auto",
        "How a collection is searched: lexical (BM25), dense (its passages' vectors), hybrid (both, fused), or auto (hybrid when the collection has vectors, else lexical).",
        ("auto", "lexical", "dense", "hybrid"),
    )
    embedder: str | None = _f(
        None,
        "The sentence-embedding model to embed questions with (a folder or hub name); null: the one the collection recorded.",
    )
    rerank_model: str | None = _f(
        None,
        "A cross-encoder (a sentence-transformers CrossEncoder folder or hub name) that re-scores the search's best rerank_candidates passages, of which the top_k best are read; null: no reranking.",
    )
    rerank_candidates: int = _f(20, "Passages the cross-encoder re-scores (rerank_model).")


@dataclass
class DocumentsConfig:
    """Budgets for reading untrusted files (`collection add`, `synth --input`, `eval --retrieve`):
    each file is read in a worker process held to them, so a file no check foresaw costs at most
    its budget and is reported in one line while the other files go on."""

    max_file_mb: float = _f(50.0, "Skip files larger than this (MB on disk).")
    file_memory_mb: int = _f(512, "Memory one file's reading (and cutting into passages) may take, in MB.")
    file_seconds: float = _f(60.0, "Seconds one file's reading (and cutting into passages) may take.")
    max_archive_mb: float = _f(
        25.0, "An archive (DOCX) whose parts would unpack to more than this (MB, all parts together) is refused unread."
    )
    max_archive_ratio: float = _f(
        100.0,
        "An archive (DOCX) over 1 MB unpacked that unpacks to more than this many times its packed size is refused unread (a zip bomb).",
    )
    max_html_mb: float = _f(
        10.0,
        "HTML pages larger than this (MB) are refused unread (extracting a page's main text costs far more than its size).",
    )
    max_passages: int = _f(200_000, "A document that would cut into more passages than this is refused.")
    batch_passages: int = _f(
        2000,
        "PostgreSQL: passages written per transaction by an add (whole documents share one; a killed add loses at most the batch it was writing, never part of a document, and a rerun adds it).",
    )


@dataclass
class TrackConfig:
    report_to: str = _f(
        "wandb",
        "wandb (offline unless WANDB_API_KEY is set), tensorboard, mlflow or none.",
        ("wandb", "tensorboard", "mlflow", "none"),
    )
    project: str = _f("loraqa", "Project / experiment name in the tracker.")
    run_name: str | None = _f(
        None, "Run name; also the default run directory runs/<run_name>. Null: derived from model and preset."
    )


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSection = field(default_factory=LoraSection)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    documents: DocumentsConfig = field(default_factory=DocumentsConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    preset: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def flat(self) -> dict:
        return {f"{s}.{k}": v for s, sec in self.to_dict().items() if isinstance(sec, dict) for k, v in sec.items()}


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "lora": LoraSection,
    "data": DataConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "retrieval": RetrievalConfig,
    "documents": DocumentsConfig,
    "track": TrackConfig,
}


def all_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def key_help() -> list[tuple[str, str]]:
    return [(f"{s}.{f.name}", f.metadata["help"]) for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
