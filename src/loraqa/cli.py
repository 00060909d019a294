"""Command line: parse, call one library function, print its result.

Each command loads its library module when it runs, so `loraqa --help` and `loraqa score` start
without importing torch. Every command runs its library call through `_run`, the one place a
LoraqaError becomes `error: <message>` and the error type's exit code.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Callable, List, Optional, TypeVar

import typer

from loraqa import config as cfgmod
from loraqa.errors import ConfigError, LoraqaError, UsageError, render

app = typer.Typer(
    help="Fine-tune encoder-decoder models (FLAN-T5) with LoRA for question answering.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

T = TypeVar("T")

# Options several commands share, declared once.
Preset = Annotated[str, typer.Option("--preset", "-p", help="Preset shipped with loraqa (see `loraqa config --list`).")]
Sets = Annotated[List[str], typer.Option("--set", "-s", help="Override one config key, e.g. --set train.batch_size=8 --set lora.target_modules=[q,v] (repeatable; for eval, the adapter's saved config, e.g. --set eval.batch_size=8).")]
ConfigFile = Annotated[Optional[str], typer.Option("--config", "-c", help="Your own YAML config (applied over the preset).")]
Model = Annotated[Optional[str], typer.Option("--model", help="A hub id or local model directory: the model to train or size, or the base model adapters sit on (default: the one the first adapter was trained on).")]
AllowPickle = Annotated[bool, typer.Option("--allow-pickle", help="Accept pickle weight files (.bin, .pt, .pkl) for the base model and adapters in this command; they can run code when loaded: only for files you trust.")]
Engine = Annotated[str, typer.Option("--engine", help="pytorch: the base model with LoRA adapters; ctranslate2: folders written by `loraqa export` (int8 by default: faster on a CPU).")]
AdapterArg = Annotated[str, typer.Argument(help="A run directory (runs/NAME), its adapter/ folder, or (for eval) an export.")]
Adapters = Annotated[List[str], typer.Option("--adapter", "-a", help="An adapter as NAME=PATH or PATH (a run directory or adapter folder; repeatable).")]
Output = Annotated[str, typer.Option("--output", "-o", help="The folder to write.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace what the output folder already holds (train: only a directory that holds a loraqa run, never the working or home directory).")]
Host = Annotated[str, typer.Option("--host", help="Interface to bind (0.0.0.0 exposes it to the network).")]
AllowedHost = Annotated[List[str], typer.Option("--allowed-host", help="Another Host name clients may use to reach the server, e.g. a DNS name behind a proxy (repeatable). Requests for any other host are refused (DNS-rebinding protection).")]
MaxContextChars = Annotated[int, typer.Option("--max-context-chars", min=1, help="Longest context (document) a question may send, in characters; it is read in windows.")]
RequestTimeout = Annotated[float, typer.Option("--request-timeout", min=0.001, help="Seconds a request may take from arrival to answer (then 504, or a failed tool call; its windows are dropped).")]
ApiKey = Annotated[Optional[str], typer.Option("--api-key", envvar="LORAQA_API_KEY", show_envvar=True, help="Require 'Authorization: Bearer KEY' on every API request. Prefer the environment variable: it does not show in `ps`.")]

@app.callback()
def _quiet_libraries() -> None:
    """Library chatter off for every command; set through the environment so nothing heavy is imported."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    for name in ("datasets", "huggingface_hub", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    if "transformers" in sys.modules:  # already imported (e.g. in-process callers): the variable came too late
        sys.modules["transformers"].utils.logging.set_verbosity_error()


def _run(action: Callable[[], T]) -> T:
    """Run a command's library call; a LoraqaError ends the command with one line per problem."""
    try:
        return action()
    except LoraqaError as exc:
        # the library names settings; the command line shows them as its flags
        problems = exc.problems if isinstance(exc, ConfigError) and len(exc.problems) > 1 else [exc.template]
        for problem in problems:
            typer.echo(f"error: {render(problem, cli=True)}", err=True)
        raise typer.Exit(exc.exit_code) from None


def _load(preset: str, config: Optional[str], sets: List[str], model: Optional[str], data: Optional[str],
          allow_pickle: bool = False) -> cfgmod.Config:
    overrides: dict = {}
    if model:
        overrides.setdefault("model", {})["name"] = model
    if data:
        overrides.setdefault("data", {})["source"] = data
    if allow_pickle:
        overrides.setdefault("model", {})["allow_pickle"] = True
    return cfgmod.load_config(preset, config, sets, overrides)


def _adapter_map(specs: List[str]) -> dict:
    """['clinical=runs/a', 'runs/b'] -> {'clinical': 'runs/a', 'b': 'runs/b'}."""
    out = {}
    for spec in specs:
        name, _, path = spec.partition("=") if "=" in spec else (Path(spec.rstrip("/")).name, "", spec)
        if name == "adapter":  # runs/NAME/adapter -> NAME
            name = Path(path.rstrip("/")).parent.name
        if not name or not path:
            raise UsageError(f"--adapter '{spec}' must be NAME=PATH or PATH")
        if name in out:
            raise UsageError(f"two adapters are named '{name}'; give them names with NAME=PATH")
        out[name] = path
    return out


@app.command()
def train(
    preset: Preset = "default",
    config: ConfigFile = None,
    set_: Sets = [],
    model: Model = None,
    data: Optional[str] = typer.Option(None, "--data", help="Dataset name or local file (sets data.source)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Run directory (default runs/<run_name>)."),
    overwrite: Overwrite = False,
    resume: bool = typer.Option(False, "--resume", help="Continue the run in the output directory from its last checkpoint."),
    allow_pickle: AllowPickle = False,
):
    """Train a LoRA adapter and record the run (config, adapter, checkpoints, metrics, data report)."""
    def action():
        from loraqa.training.train import train as run_training

        cfg = _load(preset, config, set_, model, data, allow_pickle)
        run_training(cfg, output=output, overwrite=overwrite, resume=resume)

    _run(action)


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
        typer.echo(cfgmod.dump_config(_run(lambda: cfgmod.load_config(preset, config, set_))), nl=False)


@app.command()
def doctor(
    preset: Preset = "default",
    set_: Sets = [],
    model: Model = None,
    gpu_memory: Optional[float] = typer.Option(None, "--gpu-memory", help="Size the preset for a card with this many GiB (e.g. 4 for a GTX 1650) instead of this machine."),
):
    """Check torch, the GPU (or CPU fallback), bf16, bitsandbytes, and whether a preset fits in memory."""
    def action():
        from loraqa.diagnostics.doctor import run_doctor

        run_doctor(_load(preset, None, set_, model, None), gpu_memory_gb=gpu_memory)

    _run(action)


@app.command("eval")
def eval_(
    target: AdapterArg,
    data: Optional[str] = typer.Option(None, "--data", help="Questions to answer (default: the run's held-out questions)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N questions."),
    baseline: bool = typer.Option(False, "--baseline", help="Also score the base model without the adapter."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Folder for the results (default RUN/eval)."),
    model: Model = None,
    set_: Sets = [],
    engine: Engine = "pytorch",
    allow_pickle: AllowPickle = False,
):
    """Answer questions with an adapter and score the answers (EM / F1), optionally against the base model."""
    def action():
        from loraqa.evaluation.eval_run import run_eval

        run_eval(target, data=data, limit=limit, baseline=baseline, output=output, model_override=model,
                 sets=set_, engine=engine, allow_pickle=allow_pickle)

    _run(action)


@app.command()
def predict(
    adapter: Adapters = [],
    question: Optional[str] = typer.Option(None, "--question", "-q", help="One question to answer."),
    context: Optional[str] = typer.Option(None, "--context", help="The passage to read the answer from."),
    input_file: Optional[str] = typer.Option(None, "--input", "-i", help="JSONL of {question, context?, adapter?, id?} rows (UTF-8, one object per line)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Where --input answers go (JSONL), written as they are answered."),
    resume: bool = typer.Option(False, "--resume", help="With --input: keep the answers already in --output and answer only the rows whose id is not there yet."),
    model: Model = None,
    use: Optional[str] = typer.Option(None, "--use", help="Which adapter answers --question: a name, 'base', or 'auto' (chosen by its training domain). Default: the first."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Windows per generation batch (a short passage is one window)."),
    as_json: bool = typer.Option(False, "--json", help="For --question: print the answer with its evidence (score, no_answer, start, end, windows) as JSON."),
    engine: Engine = "pytorch",
    allow_pickle: AllowPickle = False,
):
    """Answer one question (--question) or a file of them (--input/--output) with an adapter.

    A file's rows may name their adapter ('adapter': NAME, 'base' or 'auto'); output rows name
    the adapter that answered. Passages of any length are read in overlapping windows; output rows carry the answer's score
    (mean log-probability), no_answer, its character offsets in the passage and the windows read."""
    def action():
        if (question is None) == (input_file is None):
            raise UsageError("give either --question (one question) or --input FILE.jsonl with --output FILE.jsonl")
        if input_file and not output:
            raise UsageError("--input needs --output FILE.jsonl for the answers")
        if resume and not input_file:
            raise UsageError("--resume continues an --input file's answers; it has no meaning with --question")
        from loraqa.inference.predict import predict_file, predict_one

        adapters = _adapter_map(adapter)
        if question is not None:
            answer = predict_one(adapters, question, context, model, allow_pickle, use, engine)
            typer.echo(json.dumps(answer.as_dict(), ensure_ascii=False) if as_json else answer.answer)
        else:
            done = predict_file(adapters, input_file, output, model, batch_size, allow_pickle, engine, resume)
            typer.echo(f"wrote {done.written} answers to {output}"
                       + (f" ({done.skipped} already there)" if done.skipped else ""), err=True)

    _run(action)


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
        from loraqa.inference.merge import merge as do_merge

        return do_merge(adapter, output, base_model=model, overwrite=overwrite, allow_pickle=allow_pickle)

    typer.echo(f"merged model written to {_run(action)}")


@app.command()
def export(
    adapter: AdapterArg,
    output: Output,
    fmt: str = typer.Option("ctranslate2", "--format", help="Export format: ctranslate2."),
    quantization: str = typer.Option("int8", "--quantization", "-q", help="Weights: int8 (default), int8_float32, int8_bfloat16, bfloat16, float16, float32."),
    model: Model = None,
    overwrite: Overwrite = False,
    allow_pickle: AllowPickle = False,
):
    """Merge an adapter into its base and convert it for CTranslate2 (fast int8 answering on CPUs).

    Answer with it through `--engine ctranslate2` in predict, eval, serve and mcp."""
    def action():
        from loraqa.inference.export import export as do_export

        return do_export(adapter, output, fmt, quantization, model, overwrite, allow_pickle)

    typer.echo(f"exported to {_run(action)} (answer with --engine ctranslate2)")


def _limits(**values):
    from loraqa.serving.limits import ServerLimits

    return ServerLimits(**{k: v for k, v in values.items() if v is not None})


def _key(value: Optional[str], variable: str, what: str) -> Optional[str]:
    """A key from its flag or variable; an empty or blank one is refused, also when the variable
    is set to nothing (the flag then falls back to no key, which would let everyone in)."""
    from loraqa.serving.guard import checked_key

    if value is None and variable in os.environ:
        value = os.environ[variable]
    return checked_key(value, what)


def _warn_if_exposed(host: str, api_key: Optional[str]) -> None:
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        typer.echo(f"warning: serving on {host} without an API key: anyone who can reach it can use it", err=True)


@app.command()
def serve(
    adapter: Adapters = [],
    model: Model = None,
    host: Host = "127.0.0.1",
    port: int = typer.Option(8000, "--port", help="TCP port."),
    api_key: ApiKey = None,
    admin_key: Optional[str] = typer.Option(None, "--admin-key", envvar="LORAQA_ADMIN_KEY", show_envvar=True, help="The key that loads and unloads adapters (POST/DELETE /v1/adapters; it also asks questions). Without it adapters cannot be changed while the server runs."),
    adapter_root: Optional[str] = typer.Option(None, "--adapter-root", help="The only folder adapters may be hot-loaded from (POST /v1/adapters names a folder inside it)."),
    allowed_host: AllowedHost = [],
    cors_origin: List[str] = typer.Option([], "--cors-origin", help="A web origin (e.g. https://app.example.org) whose pages may call the API from a browser (repeatable; default: none)."),
    batch_window_ms: float = typer.Option(10.0, "--batch-window-ms", min=0, help="How long a request waits for others to share its batch."),
    max_batch: int = typer.Option(32, "--max-batch", min=1, help="Most windows answered in one batch (1 turns batching off); a long document's windows are spread over batches."),
    max_batch_tokens: int = typer.Option(8192, "--max-batch-tokens", min=1, help="Most padded input tokens in one batch (windows x the longest): keeps a batch of full-length windows, which everyone arriving meanwhile waits for, short."),
    max_context_chars: MaxContextChars = 1_000_000,
    max_request_windows: int = typer.Option(4_096, "--max-request-windows", min=1, help="Most windows one request may need, all its questions together (413 beyond)."),
    max_queued_windows: int = typer.Option(16_384, "--max-queued-windows", min=1, help="Most windows waiting for the model, all requests together (503 with Retry-After beyond)."),
    request_timeout: RequestTimeout = 300.0,
    max_adapters: int = typer.Option(32, "--max-adapters", min=1, help="Most adapters loaded at once."),
    engine: Engine = "pytorch",
    allow_pickle: AllowPickle = False,
):
    """Serve adapters over HTTP (POST /v1/answer, OpenAI-compatible /v1/chat/completions, demo page at /, docs at /docs)."""
    def action():
        adapters = _adapter_map(adapter)
        keys = {"api_key": _key(api_key, "LORAQA_API_KEY", "API key"),
                "admin_key": _key(admin_key, "LORAQA_ADMIN_KEY", "admin key")}
        limits = _limits(max_context_chars=max_context_chars, max_request_windows=max_request_windows,
                         max_queued_windows=max_queued_windows, request_timeout_s=request_timeout,
                         max_adapters=max_adapters)
        if adapter_root and not Path(adapter_root).is_dir():
            raise UsageError(f"--adapter-root {adapter_root} is not a folder")
        from loraqa.serving.app import run_server

        _warn_if_exposed(host, keys["api_key"])
        typer.echo(f"serving {', '.join(adapters) or 'the base model'} on http://{host}:{port} (docs: /docs)", err=True)
        run_server(adapters, host, port, model, batch_window_ms, max_batch, allow_pickle, engine, limits,
                   adapter_root=adapter_root, allowed_host=allowed_host, cors_origins=cors_origin,
                   max_batch_tokens=max_batch_tokens, **keys)

    _run(action)


@app.command()
def mcp(
    adapter: Adapters = [],
    describe: List[str] = typer.Option([], "--describe", help='NAME="text": how list_domains describes an adapter (default: from its training data).'),
    model: Model = None,
    http: Optional[int] = typer.Option(None, "--http", min=1, max=65535, help="Serve streamable HTTP on this port (at /mcp) instead of stdio."),
    host: Host = "127.0.0.1",
    api_key: ApiKey = None,
    allowed_host: AllowedHost = [],
    max_context_chars: MaxContextChars = 1_000_000,
    request_timeout: RequestTimeout = 300.0,
    engine: Engine = "pytorch",
    allow_pickle: AllowPickle = False,
):
    """Serve the adapters as MCP tools (answer_question, list_domains) for agents; stdio by default.

    An MCP host starts it itself, e.g. {"command": "loraqa", "args": ["mcp", "-a", "clinical=runs/clinical"]}.
    With no domain given, answer_question picks the adapter whose training domain matches best."""
    def action():
        adapters = _adapter_map(adapter)
        if not adapters:
            raise UsageError("give at least one adapter: --adapter NAME=PATH")
        key = _key(api_key, "LORAQA_API_KEY", "API key")
        if key is not None and http is None:
            raise UsageError("--api-key protects the HTTP endpoint; over stdio the host that starts the server is the client")
        descriptions = {}
        for item in describe:
            name, sep, text = item.partition("=")
            if not sep or not name or not text.strip():
                raise UsageError(f'--describe \'{item}\' must be NAME="what this adapter answers"')
            descriptions[name] = text.strip()
        limits = _limits(max_context_chars=max_context_chars, request_timeout_s=request_timeout)
        from loraqa.serving.mcp_server import run_mcp

        if http is not None:
            _warn_if_exposed(host, key)
        run_mcp(adapters, model, descriptions, http, host, allow_pickle, engine, key, allowed_host, limits)

    _run(action)


@app.command()
def bench(
    preset: Preset = "default",
    set_: Sets = [],
    model: Model = None,
    random_init: Optional[str] = typer.Option(None, "--random-init", help="Build the published architecture with random weights instead: flan-t5-small or flan-t5-base (same cost, no download)."),
    seed_style: bool = typer.Option(False, "--seed-style", help="Pad inputs and labels to 64 with pad ids in the loss, as the seed script did (the baseline)."),
    steps: int = typer.Option(20, "--steps", min=1, help="Timed optimizer steps."),
    warmup: int = typer.Option(3, "--warmup", min=1, help="Untimed steps first."),
    generation: bool = typer.Option(True, "--generation/--no-generation", help="Also time batched answer generation."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Write the figures to this JSON file."),
):
    """Measure training speed (examples/s, real tokens/s, MFU), peak memory and generation speed."""
    def action():
        if random_init and random_init not in ("flan-t5-small", "flan-t5-base"):
            raise UsageError(f"--random-init must be flan-t5-small or flan-t5-base, got '{random_init}'")
        cfg = _load(preset, None, set_, model, None)
        from loraqa.diagnostics import bench as bench_mod

        result = bench_mod.run_bench(cfg, random_init, seed_style, steps, warmup, generation)
        return result, bench_mod.format_result(result)

    result, lines = _run(action)
    typer.echo("\n".join(lines))
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2))


@app.command()
def report(run_dir: str = typer.Argument(..., help="A run directory written by `loraqa train`.")):
    """Draw the run's loss curves, EM/F1 over steps and token accuracy into report.png and report.html."""
    def action():
        from loraqa.evaluation.report import make_report

        return make_report(run_dir)

    png, page = _run(action)
    typer.echo(f"wrote {png} and {page}")


@app.command()
def score(
    data: str = typer.Argument(..., help="Official-format SQuAD file (v1.1 or v2.0, detected)."),
    predictions: str = typer.Argument(..., help='Predictions JSON: {"question id": "answer text"}.'),
    na_prob: Optional[str] = typer.Option(None, "--na-prob", help='No-answer probabilities JSON {"question id": p}: adds the v2.0 script\'s best_exact, best_exact_thresh, best_f1, best_f1_thresh.'),
):
    """Score a predictions file exactly like the official SQuAD evaluation scripts; prints their JSON."""
    def action():
        from loraqa.evaluation.scoring import score_files

        return score_files(data, predictions, na_prob)

    result = _run(action)
    if result.missing:
        typer.echo(f"warning: {len(result.missing)} question(s) have no prediction and score 0 "
                   f"(first: {result.missing[0]})", err=True)
    if result.unknown:
        typer.echo(f"warning: {len(result.unknown)} prediction id(s) are not in {data} and were ignored "
                   f"(first: {result.unknown[0]})", err=True)
    typer.echo(json.dumps(result.summary))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
