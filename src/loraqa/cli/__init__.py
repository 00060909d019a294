"""Command line: parse, call one library function, print its result.

Each command loads its library module when it runs, so `loraqa --help` and `loraqa score` start
without importing torch. Every command runs its library call through `options.run`, the one
place a LoraqaError becomes `error: <message>` and the error type's exit code. The servers'
commands live in serving.py; the options all commands share, in options.py.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import typer

from loraqa import config as cfgmod
from loraqa.cli import collection_vectors, collections, keys, review, serving, synth  # noqa: F401 - each registers its commands
from loraqa.cli.logs import show_progress_lines
from loraqa.cli.options import (
    AdapterArg,
    Adapters,
    AllowPickle,
    Collections,
    ConfigFile,
    EmbedderOpt,
    Engine,
    Model,
    Output,
    Overwrite,
    Preset,
    SearchMode,
    Sets,
    SimilarityModel,
    Store,
    adapter_map,
    collection_map,
    load,
    run,
)
from loraqa.errors import UsageError

app = typer.Typer(
    help="Fine-tune encoder-decoder models (FLAN-T5) with LoRA for question answering.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _quiet_libraries() -> None:
    """Library chatter off for every command; set through the environment so nothing heavy is imported."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    show_progress_lines()
    # bitsandbytes (the gpu extra) looks for a hub kernel at import, also on a CPU and offline
    for name in ("datasets", "huggingface_hub", "urllib3", "bitsandbytes"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    if "transformers" in sys.modules:  # already imported (e.g. in-process callers): the variable came too late
        sys.modules["transformers"].utils.logging.set_verbosity_error()


@app.command()
def train(
    preset: Preset = "default",
    config: ConfigFile = None,
    set_: Sets = [],
    model: Model = None,
    data: Optional[str] = typer.Option(None, "--data", help="Dataset name or local file (sets data.source)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Run directory (default runs/<run_name>)."),
    overwrite: Overwrite = False,
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in the output directory from its last checkpoint."
    ),
    allow_pickle: AllowPickle = False,
):
    """Train a LoRA adapter and record the run (config, adapter, checkpoints, metrics, data report)."""

    def action():
        from loraqa.training.train import train as run_training

        cfg = load(preset, config, set_, model, data, allow_pickle)
        run_training(cfg, output=output, overwrite=overwrite, resume=resume)

    run(action)


@app.command("config")
def show_config(
    preset: Preset = "default",
    config: ConfigFile = None,
    set_: Sets = [],
    list_presets: bool = typer.Option(False, "--list", help="List the presets."),
    keys: bool = typer.Option(False, "--keys", help="List every key with its meaning."),
):
    """Print the resolved configuration (after preset, --config and --set), or list presets and keys."""
    if list_presets:
        typer.echo("\n".join(cfgmod.preset_names()))
    elif keys:
        typer.echo("\n".join(f"{key:32s} {text}" for key, text in cfgmod.key_help()))
    else:
        typer.echo(cfgmod.dump_config(run(lambda: cfgmod.load_config(preset, config, set_))), nl=False)


@app.command()
def doctor(
    preset: Preset = "default",
    set_: Sets = [],
    model: Model = None,
    gpu_memory: Optional[float] = typer.Option(
        None,
        "--gpu-memory",
        help="Size the preset for a card with this many GiB (e.g. 4 for a GTX 1650) instead of this machine.",
    ),
):
    """Check torch, the GPU (or CPU fallback), bf16, bitsandbytes, and whether a preset fits in memory."""

    def action():
        from loraqa.diagnostics.doctor import diagnose

        return diagnose(load(preset, None, set_, model, None), gpu_memory_gb=gpu_memory)

    found = run(action)
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)
    table = Table(title="loraqa doctor", show_header=False)
    for what, finding in found.facts:
        table.add_row(what, finding)
    console.print(table)
    for warning in found.warnings:
        console.print(f"[bold yellow]warning:[/] {warning}")
    console.print(found.memory)
    for tip in found.tips:
        console.print(f"  try: {tip}")


@app.command("eval")
def eval_(
    target: AdapterArg,
    data: Optional[str] = typer.Option(
        None, "--data", help="Questions to answer (default: the run's held-out questions)."
    ),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N questions."),
    baseline: bool = typer.Option(False, "--baseline", help="Also score the base model without the adapter."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Folder for the results (default RUN/eval)."),
    model: Model = None,
    set_: Sets = [],
    retrieve: bool = typer.Option(
        False,
        "--retrieve",
        help="Also ask every question without its passage, from a collection of the data's contexts (or --collection): retrieval recall@1/5/20 and MRR, and EM/F1 from retrieved passages beside EM/F1 from the given ones.",
    ),
    collection: Optional[str] = typer.Option(
        None, "--collection", help="With --retrieve: search this collection instead of one made of the data's contexts."
    ),
    store: Store = None,
    holdout_contexts: float = typer.Option(
        0.0,
        "--holdout-contexts",
        min=0.0,
        max=0.99,
        help="With --retrieve: leave this share of the contexts out of the collection, and report how often the adapter rightly abstains on their questions.",
    ),
    track: bool = typer.Option(
        False,
        "--track",
        help="Log the figures and the answers (a predictions artifact) into the W&B or MLflow run the adapter was trained in.",
    ),
    similarity_model: SimilarityModel = None,
    embedder: EmbedderOpt = None,
    mode: SearchMode = None,
    engine: Engine = "pytorch",
    allow_pickle: AllowPickle = False,
):
    """Answer questions with an adapter and score the answers (EM / F1 / ROUGE-L, optionally semantic similarity), optionally against the base model."""

    def action():
        from rich.console import Console
        from rich.progress import Progress

        from loraqa.cli.eval_tables import print_retrieval, print_table
        from loraqa.distributed import is_main_process
        from loraqa.evaluation.eval_run import EvalOptions, run_eval

        options = EvalOptions(
            data=data,
            limit=limit,
            baseline=baseline,
            output=output,
            model_override=model,
            sets=set_,
            engine=engine,
            allow_pickle=allow_pickle,
            retrieve=retrieve,
            collection=collection,
            store=store,
            holdout_contexts=holdout_contexts,
            track=track,
            similarity_model=similarity_model,
            embedder=embedder,
            mode=mode,
        )
        from rich.progress import TaskID

        main = is_main_process()  # under torchrun the first process reports for all
        with Progress(console=Console(stderr=True), transient=True, disable=not main) as bar:
            tasks: dict[str, TaskID] = {}

            def progress(task: str, done: int, total: int) -> None:
                if task not in tasks:
                    tasks[task] = bar.add_task(task, total=total)
                bar.update(tasks[task], completed=done, total=total)

            summary = run_eval(target, options, progress)
        if main:
            print_table(summary)
            if "retrieval" in summary:
                print_retrieval(summary["retrieval"])

    run(action)


@app.command()
def predict(
    adapter: Adapters = [],
    question: Optional[str] = typer.Option(None, "--question", "-q", help="One question to answer."),
    context: Optional[str] = typer.Option(None, "--context", help="The passage to read the answer from."),
    input_file: Optional[str] = typer.Option(
        None, "--input", "-i", help="JSONL of {question, context?, adapter?, id?} rows (UTF-8, one object per line)."
    ),
    output: Optional[str] = typer.Option(
        None, "--output", "-o", help="Where --input answers go (JSONL), written as they are answered."
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="With --input: keep the answers already in --output and answer only the rows whose id is not there yet.",
    ),
    model: Model = None,
    use: Optional[str] = typer.Option(
        None,
        "--use",
        help="Which adapter answers --question: a name, 'base', or 'auto' (chosen by its training domain). Default: the first.",
    ),
    batch_size: int = typer.Option(
        16, "--batch-size", min=1, help="Windows per generation batch (a short passage is one window)."
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="For --question: print the answer with its evidence (score, no_answer, start, end, windows) as JSON.",
    ),
    store: Store = None,
    collection: Collections = [],
    engine: Engine = "pytorch",
    allow_pickle: AllowPickle = False,
):
    """Answer one question (--question) or a file of them (--input/--output) with an adapter.

    A file's rows may name their adapter ('adapter': NAME, 'base' or 'auto') and their collection
    ('collection': NAME, for rows without a context); output rows name the adapter that answered. Passages of any length are read in overlapping windows; output rows carry the answer's score
    (mean log-probability), no_answer, its character offsets in the passage and the windows read."""

    def action():
        if (question is None) == (input_file is None):
            raise UsageError("give either --question (one question) or --input FILE.jsonl with --output FILE.jsonl")
        if input_file and not output:
            raise UsageError("--input needs --output FILE.jsonl for the answers")
        if resume and not input_file:
            raise UsageError("--resume continues an --input file's answers; it has no meaning with --question")
        from loraqa.inference.answerer import AnswererOptions
        from loraqa.inference.library import CollectionSettings
        from loraqa.inference.predict import predict_file, predict_one

        adapters = adapter_map(adapter)
        collections = CollectionSettings(store, collection_map(collection, adapters))
        options: AnswererOptions = {
            "base_model": model,
            "allow_pickle": allow_pickle,
            "engine": engine,
            "collections": collections,
        }
        if question is not None:
            answer, _ = predict_one(adapters, question, context, use, **options)
            typer.echo(json.dumps(answer.as_dict(), ensure_ascii=False) if as_json else answer.answer)
        else:
            assert input_file is not None and output is not None  # checked above
            from rich.console import Console
            from rich.progress import Progress

            with Progress(console=Console(stderr=True), transient=True) as bar:
                task = bar.add_task("answering (questions)", total=None)

                def advance(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                done = predict_file(adapters, input_file, output, batch_size, resume, advance, **options)
            typer.echo(
                f"wrote {done.written} answers to {output}"
                + (f" ({done.skipped} already there)" if done.skipped else ""),
                err=True,
            )

    run(action)


@app.command()
def merge(
    adapter: AdapterArg,
    output: Output,
    model: Model = None,
    overwrite: Overwrite = False,
    allow_pickle: AllowPickle = False,
):
    """Fold an adapter into its base model: a standard model folder for from_pretrained and pipeline()."""

    def action():
        from loraqa.adapters.merge import merge as do_merge

        return do_merge(adapter, output, base_model=model, overwrite=overwrite, allow_pickle=allow_pickle)

    typer.echo(f"merged model written to {run(action)}")


@app.command()
def combine(
    adapters: List[str] = typer.Argument(
        ..., help="Two adapters or more: run directories or adapter folders of one base model."
    ),
    output: Output = ...,  # type: ignore[assignment]  # typer: ... marks a required option
    weights: Optional[str] = typer.Option(
        None,
        "--weights",
        help="One weight per adapter, comma-separated (e.g. 0.7,0.3); default: equal weights summing to 1.",
    ),
    method: str = typer.Option(
        "linear",
        "--method",
        help="PEFT's combination: linear, ties, dare_linear, dare_ties, svd, cat (also ties_svd, dare_linear_svd, dare_ties_svd, magnitude_prune, magnitude_prune_svd). linear, ties and dare_* need adapters of one rank; cat's rank is the sum of theirs.",
    ),
    density: Optional[float] = typer.Option(
        None,
        "--density",
        help="ties, dare_* and magnitude_prune: the share of each adapter's weights kept (default 0.5).",
    ),
    seed: int = typer.Option(42, "--seed", help="Seed of DARE's random pruning."),
    model: Model = None,
    overwrite: Overwrite = False,
    allow_pickle: AllowPickle = False,
):
    """Make one adapter out of several with PEFT's add_weighted_adapter: usable by predict, eval,
    serve, merge, export and auto routing (its domain profile is its parents' weighted union)."""

    def action():
        from loraqa.adapters.combine import Blend
        from loraqa.adapters.combine import combine as do_combine

        parsed = None
        if weights is not None:
            try:
                parsed = [float(w) for w in weights.split(",")]
            except ValueError:
                raise UsageError(f"--weights takes numbers separated by commas, got {weights!r}") from None
        return do_combine(adapters, output, Blend(method, parsed, density, seed), model, overwrite, allow_pickle)

    typer.echo(f"combined adapter written to {run(action)} (calibrate it with `loraqa eval`)")


@app.command()
def export(
    adapter: AdapterArg,
    output: Output,
    fmt: str = typer.Option("ctranslate2", "--format", help="Export format: ctranslate2."),
    quantization: str = typer.Option(
        "int8",
        "--quantization",
        "-q",
        help="Weights: int8 (default), int8_float32, int8_bfloat16, bfloat16, float16, float32.",
    ),
    model: Model = None,
    overwrite: Overwrite = False,
    allow_pickle: AllowPickle = False,
):
    """Merge an adapter into its base and convert it for CTranslate2 (fast int8 answering on CPUs).

    Answer with it through `--engine ctranslate2` in predict, eval, serve and mcp."""

    def action():
        from loraqa.adapters.export import export as do_export

        return do_export(adapter, output, fmt, quantization, model, overwrite, allow_pickle)

    typer.echo(f"exported to {run(action)} (answer with --engine ctranslate2)")


app.command()(serving.serve)
app.command()(serving.mcp)
app.add_typer(collections.collection, name="collection")
app.add_typer(review.review, name="review")
app.add_typer(keys.keys, name="keys")
app.command()(collections.ask)
app.command()(synth.synth)


@app.command()
def bench(
    preset: Preset = "default",
    set_: Sets = [],
    model: Model = None,
    random_init: Optional[str] = typer.Option(
        None,
        "--random-init",
        help="Build the published architecture with random weights instead: flan-t5-small or flan-t5-base (same cost, no download).",
    ),
    seed_style: bool = typer.Option(
        False,
        "--seed-style",
        help="Pad inputs and labels to 64 with pad ids in the loss, as the seed script did (the baseline).",
    ),
    steps: int = typer.Option(20, "--steps", min=1, help="Timed optimizer steps."),
    warmup: int = typer.Option(3, "--warmup", min=1, help="Untimed steps first."),
    generation: bool = typer.Option(True, "--generation/--no-generation", help="Also time batched answer generation."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Write the figures to this JSON file."),
):
    """Measure training speed (examples/s, real tokens/s, MFU), peak memory and generation speed."""

    def action():
        if random_init and random_init not in ("flan-t5-small", "flan-t5-base"):
            raise UsageError(f"--random-init must be flan-t5-small or flan-t5-base, got '{random_init}'")
        cfg = load(preset, None, set_, model, None)
        from loraqa.diagnostics import bench as bench_mod

        result = bench_mod.run_bench(cfg, random_init, seed_style, steps, warmup, generation)
        return result, bench_mod.format_result(result)

    result, lines = run(action)
    typer.echo("\n".join(lines))
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2))


@app.command()
def report(run_dir: str = typer.Argument(..., help="A run directory written by `loraqa train`.")):
    """Draw the run's loss curves, EM/F1 over steps and token accuracy into report.png and report.html."""

    def action():
        from loraqa.evaluation.report import make_report

        return make_report(run_dir)

    png, page = run(action)
    typer.echo(f"wrote {png} and {page}")


@app.command()
def score(
    data: str = typer.Argument(..., help="Official-format SQuAD file (v1.1 or v2.0, detected)."),
    predictions: str = typer.Argument(..., help='Predictions JSON: {"question id": "answer text"}.'),
    na_prob: Optional[str] = typer.Option(
        None,
        "--na-prob",
        help='No-answer probabilities JSON {"question id": p}: adds the v2.0 script\'s best_exact, best_exact_thresh, best_f1, best_f1_thresh.',
    ),
    similarity_model: SimilarityModel = None,
):
    """Score a predictions file exactly like the official SQuAD evaluation scripts; prints their JSON with ROUGE-L (rouge-score's, percent) added as rouge_l."""

    def action():
        from loraqa.evaluation.scoring import score_files

        return score_files(data, predictions, na_prob, similarity_model)

    result = run(action)
    if result.missing:
        typer.echo(
            f"warning: {len(result.missing)} question(s) have no prediction and score 0 (first: {result.missing[0]})",
            err=True,
        )
    if result.unknown:
        typer.echo(
            f"warning: {len(result.unknown)} prediction id(s) are not in {data} and were ignored "
            f"(first: {result.unknown[0]})",
            err=True,
        )
    typer.echo(json.dumps(result.summary))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
