"""`loraqa synth`: question-answer training data written from documents, checked and filtered."""

from __future__ import annotations

from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import Progress

from loraqa.cli.options import (
    AllowPickle,
    DocumentSets,
    FileMemory,
    FileSeconds,
    FollowLinks,
    MaxFileMb,
    Store,
    document_limits,
    run,
)
from loraqa.errors import render

_HINTS = {
    "question_cut_off": "questions reached the writer's token limit unfinished: the writer loops or rambles "
    "(with --generator openai, raise --max-tokens)",
    "name_not_in_passage": "questions name somebody or something the passage never mentions: the writer does "
    "not copy names (--any-names keeps them)",
    "answer_not_in_passage": "answers are not quoted from their passage: the writer paraphrases (ask it to copy "
    "answers word for word; --prompt-file)",
}


def synth(
    collection: Optional[str] = typer.Argument(
        None, help="The collection whose passages get questions (or use --input)."
    ),
    output: str = typer.Option(
        ...,
        "--output",
        "-o",
        help="The JSONL file to write (loraqa's data format, with provenance); its report goes beside it as OUTPUT.report.json.",
    ),
    inputs: List[str] = typer.Option(
        [], "--input", help="Files, folders or globs to read instead of a collection (repeatable)."
    ),
    store: Store = None,
    passages: Optional[int] = typer.Option(
        None,
        "--passages",
        min=1,
        help="How many passages to write questions for, taken in turn from every document (seeded); default: all.",
    ),
    per_passage: int = typer.Option(
        3, "--per-passage", min=1, help="Answer candidates per passage, names and numbers first (local generator)."
    ),
    seed: int = typer.Option(42, "--seed", help="Seed for sampling passages, candidates and unanswerable pairs."),
    generator: str = typer.Option(
        "local",
        "--generator",
        help="local: a question-generation adapter (--adapter) writes a question for each answer candidate. openai: an OpenAI-compatible chat endpoint (--base-url, --model; key from OPENAI_API_KEY).",
    ),
    adapter: Optional[str] = typer.Option(
        None,
        "--adapter",
        "-a",
        help="The question-generation adapter (a run of `loraqa train --set data.task=question_generation`).",
    ),
    model: Optional[str] = typer.Option(
        None,
        "--model",
        help="local: the base model the adapter sits on (a hub id or local directory; default: the one it was trained on). openai: the model name the endpoint serves.",
    ),
    base_url: Optional[str] = typer.Option(
        None,
        "--base-url",
        help="openai: the endpoint, e.g. https://api.openai.com/v1, http://localhost:11434/v1 (Ollama) or http://localhost:8000/v1 (vLLM, loraqa serve).",
    ),
    ask: str = typer.Option(
        "pairs",
        "--ask",
        help="openai: 'pairs' asks for question-answer pairs as JSON, one request per passage (an instruction-following LLM); 'questions' sends each answer candidate as the user message and the passage as the system message, and takes the reply as its question (loraqa serve with a question-generation adapter).",
    ),
    concurrency: int = typer.Option(
        4, "--concurrency", min=1, max=256, help="openai: most requests in flight at once."
    ),
    retries: int = typer.Option(
        5,
        "--retries",
        min=0,
        max=20,
        help="openai: retries of a request answered 429, 408, 409 or 5xx (or not answered), with exponential backoff.",
    ),
    timeout: float = typer.Option(
        120.0,
        "--timeout",
        min=1,
        help="openai: seconds from sending a request to its reply's last byte (each retry gets its own).",
    ),
    max_reply_kb: float = typer.Option(
        256, "--max-reply-kb", min=1, help="openai: a longer reply is counted as malformed, never cached."
    ),
    prompt_file: Optional[str] = typer.Option(
        None,
        "--prompt-file",
        help="openai --ask pairs: a text file with the prompt, holding {passage} and optionally {n} (pairs wanted); default: a prompt asking for JSON pairs with answers quoted from the passage.",
    ),
    cache: Optional[str] = typer.Option(
        None,
        "--cache",
        help="openai: the SQLite file that keeps every reply, keyed by model and messages, so a rerun pays nothing twice (default: OUTPUT.cache.sqlite).",
    ),
    max_tokens: Optional[int] = typer.Option(
        None, "--max-tokens", min=1, help="openai: most tokens per reply (default: the endpoint's)."
    ),
    reader: Optional[str] = typer.Option(
        None,
        "--reader",
        help="The round-trip reader: a QA adapter's run directory, or 'base' (the base model). Pairs it does not answer the same way are dropped. Default: no round trip.",
    ),
    min_roundtrip_f1: float = typer.Option(
        0.5,
        "--min-roundtrip-f1",
        help="Keep a pair when the reader's answer has at least this F1 against the pair's answer.",
    ),
    roundtrip_margin: Optional[float] = typer.Option(
        None,
        "--roundtrip-margin",
        min=0,
        help="Also keep a pair the reader answers otherwise when it finds the pair's answer nearly as likely as its own: at most this far below it, in mean log-probability per token (e.g. 1.0). For a reader that still mixes people or places up; off by default.",
    ),
    spans: str = typer.Option(
        "reader",
        "--spans",
        help="Whose answer bounds a confirmed pair keeps when the reader's answer overlaps the writer's but differs (round-trip F1 below 1): reader (what the question asks, drawn as the reader's QA data draws answers, e.g. 'grey' rather than the candidate 'a grey kettle'; the writer's answer stays in the row as generated_answer) or writer.",
    ),
    check_names: bool = typer.Option(
        True,
        "--check-names/--any-names",
        help="Drop a question with a capitalised word (a name) that the passage never has: a writer's made-up or garbled names.",
    ),
    unanswerable: float = typer.Option(
        0.0,
        "--unanswerable",
        help="Share of kept pairs also asked of another document's passage, with no answer (so adapters learn to abstain).",
    ),
    passage_chars: int = typer.Option(
        1000, "--passage-chars", min=100, help="With --input: the longest passage, in characters."
    ),
    overlap: int = typer.Option(200, "--overlap", min=0, help="With --input: characters consecutive passages share."),
    max_file_mb: MaxFileMb = None,
    file_memory_mb: FileMemory = None,
    file_seconds: FileSeconds = None,
    follow_links: FollowLinks = False,
    sets: DocumentSets = [],
    allow_pickle: AllowPickle = False,
):
    """Write question-answer pairs from documents, with a question-generation adapter or any
    OpenAI-compatible chat endpoint: every answer is quoted from its passage,
    repeated questions are dropped, and with --reader only pairs a reader answers the same way
    are kept. Train on the output with `loraqa train --data OUTPUT --set data.split_by=document`."""

    def action():
        from loraqa.synth.job import Endpoint, SynthOptions, run_synth

        endpoint = Endpoint(base_url, ask, concurrency, retries, timeout, prompt_file, cache, max_tokens, max_reply_kb)
        limits = document_limits(
            sets, max_file_mb=max_file_mb, file_memory_mb=file_memory_mb, file_seconds=file_seconds
        )

        with Progress(console=Console(stderr=True), transient=True) as bar:
            tasks: dict = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=total)
                bar.update(tasks[stage], completed=done, total=total)

            options = SynthOptions(
                collection=collection,
                inputs=inputs,
                store=store,
                passages=passages,
                per_passage=per_passage,
                seed=seed,
                generator=generator,
                adapter=adapter,
                model=model,
                reader=reader,
                min_roundtrip_f1=min_roundtrip_f1,
                unanswerable=unanswerable,
                passage_chars=passage_chars,
                overlap=overlap,
                documents=limits,
                allow_pickle=allow_pickle,
                endpoint=endpoint,
                roundtrip_margin=roundtrip_margin,
                check_names=check_names,
                spans=spans,
                follow_links=follow_links,
            )
            return run_synth(output, options, progress)

    written, report = run(action)
    for _, why in report.skipped_files:
        typer.echo(f"error: {render(why, cli=True)}", err=True)
    dropped = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(report.dropped.items())) or "none"
    by_likelihood = (
        f", {report.kept_by_likelihood} of them by likelihood" if report.roundtrip_margin is not None else ""
    )
    by_reader = f", {report.answers_from_reader} with the reader's answer span" if report.answers_from_reader else ""
    typer.echo(
        f"{report.passages} passages, {report.generated} pairs generated, {report.kept} kept{by_likelihood}"
        f"{by_reader} "
        f"(+{report.unanswerable} unanswerable); dropped: {dropped}",
        err=True,
    )
    for reason, hint in _HINTS.items():  # a check that drops most pairs says what usually causes it
        if report.generated and report.dropped.get(reason, 0) > report.generated / 2:
            typer.echo(f"note: {report.dropped[reason]} of {report.generated} {hint}", err=True)
    stats = report.generator
    if generator == "openai":
        typer.echo(
            f"endpoint: {stats['requests']} requests ({stats['cached']} answered from the cache), "
            f"{stats['prompt_tokens']} prompt + {stats['completion_tokens']} completion tokens, "
            f"{stats['malformed']} malformed replies, {stats['extra']['failed']} failed requests",
            err=True,
        )
        if stats["malformed_reasons"]:
            typer.echo(
                "malformed: " + "; ".join(f"{n} {why}" for why, n in sorted(stats["malformed_reasons"].items())),
                err=True,
            )
    typer.echo(f"wrote {written} rows to {output} (report: {output}.report.json)", err=True)
    if report.skipped_files:
        raise typer.Exit(1)
