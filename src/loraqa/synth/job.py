"""`loraqa synth`: passages from a collection or files, a generator, a reader, the output file.

The output is written whole at the end, atomically, with its report beside it
(OUTPUT.report.json): an interrupted run leaves no half-written file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from loraqa.artifacts import jsonl_line, resolve_adapter, write_atomic, write_json
from loraqa.errors import LoraqaError, UsageError
from loraqa.synth.generators import LocalGenerator
from loraqa.synth.pipeline import Reader, SynthReport, synthesise
from loraqa.synth.sampling import collection_passages, file_passages, sample_passages

BASE_READER = "base"


def report_path(output: Path) -> Path:
    return output.with_name(output.name + ".report.json")


def build_models(generator: str, adapter: str | None, model: str | None, reader: str | None,
                 allow_pickle: bool = False):
    """(the question writer's Answerer and adapter name, the Reader or None). Writer and reader
    share one Answerer (one base model in memory) when they sit on the same base model."""
    from loraqa.inference.answerer import Answerer

    if generator != "local":
        raise UsageError(f"unknown generator {generator!r}; use local")
    if not adapter:
        raise UsageError("--generator local writes questions with a question-generation adapter: give --adapter "
                         "(made by `loraqa train --set data.task=question_generation`)")
    writer_ref = resolve_adapter(adapter)
    if writer_ref.config.data.task != "question_generation":
        raise UsageError(f"{adapter} was trained to answer questions, not to write them; train one with "
                         "--set data.task=question_generation")
    adapters = {"writer": writer_ref}
    reader_ref = None
    if reader and reader != BASE_READER:
        reader_ref = resolve_adapter(reader)
        if reader_ref.config.data.task != "qa":
            raise UsageError(f"the reader {reader} writes questions; the round trip needs one that answers them")
    base = model or writer_ref.config.model.name
    if reader_ref is not None and (model or reader_ref.config.model.name) == base:
        adapters["reader"] = reader_ref
    writer = Answerer(adapters, base_model=model, allow_pickle=allow_pickle)
    judge = None
    if reader == BASE_READER:
        judge = Reader(writer, "base")
    elif reader_ref is not None:
        judge = Reader(writer, "reader") if "reader" in adapters else \
            Reader(Answerer({"reader": reader_ref}, allow_pickle=allow_pickle), "reader")
    return writer, judge


def run_synth(output: str, collection: str | None = None, inputs: list[str] | None = None, store: str | None = None,
              passages: int | None = None, per_passage: int = 3, seed: int = 42, generator: str = "local",
              adapter: str | None = None, model: str | None = None, reader: str | None = None,
              min_roundtrip_f1: float = 0.5, unanswerable: float = 0.0, passage_chars: int = 1000,
              overlap: int = 200, max_file_mb: float = 50, allow_pickle: bool = False,
              progress: Callable[[str, int, int], None] | None = None) -> tuple[int, SynthReport]:
    """Write OUTPUT (JSONL, loraqa's data format) and its report; returns (rows, report)."""
    if (collection is None) == (not inputs):
        raise UsageError("give a COLLECTION or --input PATHS (files, folders or globs), not both")
    if not 0 <= min_roundtrip_f1 <= 1:
        raise UsageError(f"--min-roundtrip-f1 must be between 0 and 1, got {min_roundtrip_f1}")
    if not 0 <= unanswerable <= 1:
        raise UsageError(f"--unanswerable must be a share between 0 and 1, got {unanswerable}")
    out = Path(output)
    if out.is_dir():
        raise UsageError(f"--output {output} is a directory; name the JSONL file to write")
    skipped = []
    if collection is not None:
        from loraqa.retrieval import open_store

        by_document = collection_passages(open_store(store).open(collection))
    else:
        by_document, skipped = file_passages(inputs, passage_chars, overlap, max_file_mb)
    picked = sample_passages(by_document, passages, seed)
    if not picked:
        where = f"collection {collection}" if collection else "the input files"
        raise LoraqaError(f"{where} holds no passages to write questions for")
    writer, judge = build_models(generator, adapter, model, reader, allow_pickle)
    gen = LocalGenerator(writer, "writer", f"local:{Path(adapter).resolve().name}", per_passage, seed)
    rows, report = synthesise(picked, gen, judge, min_roundtrip_f1, unanswerable, seed, progress)
    report.skipped_files = skipped
    write_atomic(out, "".join(jsonl_line(r) for r in rows))
    write_json(report_path(out), report.as_dict())
    return len(rows), report
