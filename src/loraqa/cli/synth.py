"""`loraqa synth`: question-answer training data written from documents, checked and filtered."""

from __future__ import annotations

from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import Progress

from loraqa.cli.options import AllowPickle, Model, Store, run


def synth(
    collection: Optional[str] = typer.Argument(None, help="The collection whose passages get questions (or use --input)."),
    output: str = typer.Option(..., "--output", "-o", help="The JSONL file to write (loraqa's data format, with provenance); its report goes beside it as OUTPUT.report.json."),
    inputs: List[str] = typer.Option([], "--input", help="Files, folders or globs to read instead of a collection (repeatable)."),
    store: Store = None,
    passages: Optional[int] = typer.Option(None, "--passages", min=1, help="How many passages to write questions for, taken in turn from every document (seeded); default: all."),
    per_passage: int = typer.Option(3, "--per-passage", min=1, help="Answer candidates per passage, names and numbers first (local generator)."),
    seed: int = typer.Option(42, "--seed", help="Seed for sampling passages, candidates and unanswerable pairs."),
    generator: str = typer.Option("local", "--generator", help="local: a question-generation adapter (--adapter) writes a question for each answer candidate."),
    adapter: Optional[str] = typer.Option(None, "--adapter", "-a", help="The question-generation adapter (a run of `loraqa train --set data.task=question_generation`)."),
    model: Model = None,
    reader: Optional[str] = typer.Option(None, "--reader", help="The round-trip reader: a QA adapter's run directory, or 'base' (the base model). Pairs it does not answer the same way are dropped. Default: no round trip."),
    min_roundtrip_f1: float = typer.Option(0.5, "--min-roundtrip-f1", help="Keep a pair when the reader's answer has at least this F1 against the pair's answer."),
    unanswerable: float = typer.Option(0.0, "--unanswerable", help="Share of kept pairs also asked of another document's passage, with no answer (so adapters learn to abstain)."),
    passage_chars: int = typer.Option(1000, "--passage-chars", min=100, help="With --input: the longest passage, in characters."),
    overlap: int = typer.Option(200, "--overlap", min=0, help="With --input: characters consecutive passages share."),
    max_file_mb: float = typer.Option(50, "--max-file-mb", min=0.001, help="With --input: skip files larger than this."),
    allow_pickle: AllowPickle = False,
):
    """Write question-answer pairs from documents: every answer is quoted from its passage,
    repeated questions are dropped, and with --reader only pairs a reader answers the same way
    are kept. Train on the output with `loraqa train --data OUTPUT --set data.split_by=document`."""
    def action():
        from loraqa.synth.job import run_synth

        with Progress(console=Console(stderr=True), transient=True) as bar:
            tasks: dict = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=total)
                bar.update(tasks[stage], completed=done, total=total)

            return run_synth(output, collection, inputs, store, passages, per_passage, seed, generator, adapter,
                             model, reader, min_roundtrip_f1, unanswerable, passage_chars, overlap, max_file_mb,
                             allow_pickle, progress)

    written, report = run(action)
    for path, why in report.skipped_files:
        typer.echo(f"error: {why}", err=True)
    dropped = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(report.dropped.items())) or "none"
    typer.echo(f"{report.passages} passages, {report.generated} pairs generated, {report.kept} kept "
               f"(+{report.unanswerable} unanswerable); dropped: {dropped}", err=True)
    typer.echo(f"wrote {written} rows to {output} (report: {output}.report.json)", err=True)
    if report.skipped_files:
        raise typer.Exit(1)
