"""`loraqa synth`: passages from a collection or files, a generator, a reader, the output file.

The output is written whole at the end, atomically, with its report beside it
(OUTPUT.report.json): an interrupted run leaves no half-written file. With the OpenAI-compatible
generator every reply is cached as it arrives (OUTPUT.cache.sqlite unless named), so the rerun
after an interruption pays only for what was not answered.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loraqa.adapters.folder import resolve_adapter
from loraqa.adapters.names import BASE
from loraqa.config.schema import DocumentsConfig
from loraqa.errors import LoraqaError, UsageError
from loraqa.inference.answerer import Answerer
from loraqa.output_files import jsonl_line, write_atomic, write_json
from loraqa.retrieval import open_store
from loraqa.synth.generators import LocalGenerator
from loraqa.synth.openai_generator import Endpoint, OpenAIGenerator
from loraqa.synth.pipeline import Reader, SynthReport, synthesise
from loraqa.synth.replies import load_prompt
from loraqa.synth.reply_cache import ReplyCache
from loraqa.synth.sampling import collection_passages, file_passages, sample_passages


def report_path(output: Path) -> Path:
    return output.with_name(output.name + ".report.json")


def cache_path(output: Path) -> Path:
    return output.with_name(output.name + ".cache.sqlite")


def build_openai(endpoint: Endpoint, model: str | None, output: Path, per_passage: int, seed: int):
    if not endpoint.base_url or not model:
        raise UsageError(
            "--generator openai asks an OpenAI-compatible endpoint: give --base-url URL (e.g. "
            "http://localhost:8000/v1) and --model NAME (the model it serves)"
        )
    prompt = load_prompt(endpoint.prompt_file)
    cache = ReplyCache(endpoint.cache or cache_path(output))
    # Local servers (vLLM, Ollama, loraqa serve without a key) take any key; the client needs one.
    key = os.environ.get("OPENAI_API_KEY") or "none"
    return OpenAIGenerator(endpoint, model, key, cache, prompt, per_passage, seed)


def build_reader(reader: str | None, allow_pickle: bool = False):
    """The round-trip Reader for a generator that is not a local adapter (None: no round trip)."""

    if not reader:
        return None
    if reader == BASE:
        raise UsageError(
            "with --generator openai, --reader names a QA adapter's run directory ('base' means the "
            "local writer's base model, and there is none)"
        )
    ref = resolve_adapter(reader)
    if ref.config.data.task != "qa":
        raise UsageError(f"the reader {reader} writes questions; the round trip needs one that answers them")
    return Reader(Answerer({"reader": ref}, allow_pickle=allow_pickle), "reader")


def build_models(
    generator: str, adapter: str | None, model: str | None, reader: str | None, allow_pickle: bool = False
):
    """(the question writer's Answerer and adapter name, the Reader or None). Writer and reader
    share one Answerer (one base model in memory) when they sit on the same base model."""

    if generator != "local":
        raise UsageError(f"unknown generator {generator!r}; use local or openai")
    if not adapter:
        raise UsageError(
            "--generator local writes questions with a question-generation adapter: give --adapter "
            "(made by `loraqa train --set data.task=question_generation`)"
        )
    writer_ref = resolve_adapter(adapter)
    if writer_ref.config.data.task != "question_generation":
        raise UsageError(
            f"{adapter} was trained to answer questions, not to write them; train one with "
            "--set data.task=question_generation"
        )
    adapters = {"writer": writer_ref}
    reader_ref = None
    if reader and reader != BASE:
        reader_ref = resolve_adapter(reader)
        if reader_ref.config.data.task != "qa":
            raise UsageError(f"the reader {reader} writes questions; the round trip needs one that answers them")
    base = model or writer_ref.config.model.name
    if reader_ref is not None and (model or reader_ref.config.model.name) == base:
        adapters["reader"] = reader_ref
    writer = Answerer(adapters, base_model=model, allow_pickle=allow_pickle)
    judge = None
    if reader == BASE:
        judge = Reader(writer, "base")
    elif reader_ref is not None:
        judge = (
            Reader(writer, "reader")
            if "reader" in adapters
            else Reader(Answerer({"reader": reader_ref}, allow_pickle=allow_pickle), "reader")
        )
    return writer, judge


@dataclass
class SynthOptions:
    """What `loraqa synth` takes beside its output. The passages: a `collection` (of `store`) or
    `inputs` (files, folders, globs) cut into passages of `passage_chars` sharing `overlap`, read
    within the `documents` budgets; `passages` of them sampled with `seed`. The writer: a local
    question-generation `adapter` (on `model`), or `generator` "openai" at `endpoint`. The checks:
    a `reader` (an adapter, or "base") must answer alike (`min_roundtrip_f1`, or within
    `roundtrip_margin` of its own answer's likelihood); `spans`: whose answer span a kept pair
    carries; `unanswerable`: the share of no-answer rows added."""

    collection: str | None = None
    inputs: list[str] | None = None
    store: str | None = None
    passages: int | None = None
    per_passage: int = 3
    seed: int = 42
    generator: str = "local"
    adapter: str | None = None
    model: str | None = None
    reader: str | None = None
    min_roundtrip_f1: float = 0.5
    unanswerable: float = 0.0
    passage_chars: int = 1000
    overlap: int = 200
    documents: DocumentsConfig | None = None
    allow_pickle: bool = False
    endpoint: Endpoint | None = None
    roundtrip_margin: float | None = None
    check_names: bool = True
    spans: str = "reader"
    follow_links: bool = False


def run_synth(
    output: str, options: SynthOptions, progress: Callable[[str, int, int], None] | None = None
) -> tuple[int, SynthReport]:
    """Write OUTPUT (JSONL, loraqa's data format) and its report; returns (rows, report).
    progress(stage, done, total) follows the reading, writing and checking."""
    o = options
    collection, inputs, store, passages, seed = o.collection, o.inputs, o.store, o.passages, o.seed
    generator, adapter, model, reader, allow_pickle = o.generator, o.adapter, o.model, o.reader, o.allow_pickle
    min_roundtrip_f1, roundtrip_margin, unanswerable, spans = (
        o.min_roundtrip_f1,
        o.roundtrip_margin,
        o.unanswerable,
        o.spans,
    )
    if (collection is None) == (not inputs):
        raise UsageError("give a COLLECTION or --input PATHS (files, folders or globs), not both")
    if not 0 <= min_roundtrip_f1 <= 1:
        raise UsageError(f"--min-roundtrip-f1 must be between 0 and 1, got {min_roundtrip_f1}")
    if roundtrip_margin is not None and not roundtrip_margin >= 0:
        raise UsageError(f"--roundtrip-margin must be >= 0, got {roundtrip_margin}")
    if roundtrip_margin is not None and not reader:
        raise UsageError("--roundtrip-margin loosens the round trip: it needs a --reader")
    if spans not in ("reader", "writer"):
        raise UsageError(f"--spans is reader or writer, got {spans!r}")
    if not 0 <= unanswerable <= 1:
        raise UsageError(f"--unanswerable must be a share between 0 and 1, got {unanswerable}")
    out = Path(output)
    if out.is_dir():
        raise UsageError(f"--output {output} is a directory; name the JSONL file to write")
    skipped: list[tuple[str, str]] = []
    if collection is not None:
        by_document = collection_passages(open_store(store).open(collection))
    else:
        by_document, skipped = file_passages(inputs or [], o.passage_chars, o.overlap, o.documents, o.follow_links)
    picked = sample_passages(by_document, passages, seed)
    if not picked:
        where = f"collection {collection}" if collection else "the input files"
        raise LoraqaError(f"{where} holds no passages to write questions for")
    if generator == "openai":
        gen = build_openai(o.endpoint or Endpoint(), model, out, o.per_passage, seed)
        judge = build_reader(reader, allow_pickle)
    else:
        writer, judge = build_models(generator, adapter, model, reader, allow_pickle)
        gen = LocalGenerator(writer, "writer", f"local:{Path(adapter or '').resolve().name}", o.per_passage, seed)
    if judge is not None:
        judge.margin, judge.min_f1, judge.spans = roundtrip_margin, min_roundtrip_f1, spans == "reader"
    rows, report = synthesise(picked, gen, judge, unanswerable, seed, progress, check_names=o.check_names)
    report.skipped_files = skipped
    write_atomic(out, "".join(jsonl_line(r) for r in rows))
    write_json(report_path(out), report.as_dict())
    return len(rows), report
