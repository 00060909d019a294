"""What the commands share: their options (each declared once), running a library call so that a
LoraqaError ends the command with one line and its exit code, and parsing adapter arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Callable, List, Optional, TypeVar

import typer

from loraqa import config as cfgmod
from loraqa.errors import ConfigError, LoraqaError, UsageError, render

T = TypeVar("T")

# Options several commands share, declared once.
Preset = Annotated[str, typer.Option("--preset", "-p", help="Preset shipped with loraqa (see `loraqa config --list`).")]
Sets = Annotated[
    List[str],
    typer.Option(
        "--set",
        "-s",
        help="Override one config key, e.g. --set train.batch_size=8 --set lora.target_modules=[q,v] (repeatable; for eval, the adapter's saved config, e.g. --set eval.batch_size=8).",
    ),
]
ConfigFile = Annotated[
    Optional[str], typer.Option("--config", "-c", help="Your own YAML config (applied over the preset).")
]
Model = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        help="A hub id or local model directory: the model to train or size, or the base model adapters sit on (default: the one the first adapter was trained on).",
    ),
]
AllowPickle = Annotated[
    bool,
    typer.Option(
        "--allow-pickle",
        help="Accept pickle weight files (.bin, .pt, .pkl) for the base model and adapters in this command; they can run code when loaded: only for files you trust.",
    ),
]
Engine = Annotated[
    str,
    typer.Option(
        "--engine",
        help="pytorch: the base model with LoRA adapters; ctranslate2: folders written by `loraqa export` (int8 by default: faster on a CPU).",
    ),
]
AdapterArg = Annotated[
    str, typer.Argument(help="A run directory (runs/NAME), its adapter/ folder, or (for eval) an export.")
]
Adapters = Annotated[
    List[str],
    typer.Option(
        "--adapter", "-a", help="An adapter as NAME=PATH or PATH (a run directory or adapter folder; repeatable)."
    ),
]
Output = Annotated[str, typer.Option("--output", "-o", help="The folder to write.")]
Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace what the output folder already holds (train: only a directory that holds a loraqa run, never the working or home directory).",
    ),
]
Host = Annotated[str, typer.Option("--host", help="Interface to bind (0.0.0.0 exposes it to the network).")]
AllowedHost = Annotated[
    List[str],
    typer.Option(
        "--allowed-host",
        help="Another Host name clients may use to reach the server, e.g. a DNS name behind a proxy (repeatable). Requests for any other host are refused (DNS-rebinding protection).",
    ),
]
MaxContextChars = Annotated[
    int,
    typer.Option(
        "--max-context-chars",
        min=1,
        help="Longest context (document) a question may send, in characters; it is read in windows.",
    ),
]
RequestTimeout = Annotated[
    float,
    typer.Option(
        "--request-timeout",
        min=0.001,
        help="Seconds a request may take from arrival to answer (then 504, or a failed tool call; its windows are dropped).",
    ),
]
SimilarityModel = Annotated[
    Optional[str],
    typer.Option(
        "--similarity-model",
        help="A local sentence-embedding or cross-encoder folder (sentence-transformers; pip install 'loraqa\\[similarity]'): also score semantic answer similarity (sas: the answer in other words counts), off by default.",
    ),
]
Store = Annotated[
    Optional[str],
    typer.Option("--store", help="Where collections live: a directory of SQLite files (default: collections/)."),
]
Collections = Annotated[
    List[str],
    typer.Option(
        "--collection",
        help="ADAPTER=COLLECTION: questions asked of ADAPTER without a passage are answered from the passages of COLLECTION (repeatable); a bare COLLECTION binds every adapter given.",
    ),
]
ApiKey = Annotated[
    Optional[str],
    typer.Option(
        "--api-key",
        envvar="LORAQA_API_KEY",
        show_envvar=True,
        help="Require 'Authorization: Bearer KEY' on every API request. Prefer the environment variable: it does not show in `ps`.",
    ),
]


def run(action: Callable[[], T]) -> T:
    """Run a command's library call; a LoraqaError ends the command with one line per problem."""
    try:
        return action()
    except LoraqaError as exc:
        # the library names settings; the command line shows them as its flags
        if isinstance(exc, ConfigError) and len(exc.problems) > 1:
            lines = [render(problem, cli=True) for problem in exc.problems]
        else:
            lines = [exc.cli_message()]
        for line in lines:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(exc.exit_code) from None


def load(
    preset: str,
    config: Optional[str],
    sets: List[str],
    model: Optional[str],
    data: Optional[str],
    allow_pickle: bool = False,
) -> cfgmod.Config:
    overrides: dict = {}
    if model:
        overrides.setdefault("model", {})["name"] = model
    if data:
        overrides.setdefault("data", {})["source"] = data
    if allow_pickle:
        overrides.setdefault("model", {})["allow_pickle"] = True
    return cfgmod.load_config(preset, config, sets, overrides)


def collection_map(specs: List[str], adapters: dict) -> dict:
    """['clinical=wards', 'handbook'] -> {'clinical': 'wards', <every other adapter>: 'handbook'}."""
    out: dict = {}
    for spec in specs:
        name, sep, collection = spec.partition("=")
        if not sep:
            out.update({a: spec for a in adapters if a not in out})
        elif not name or not collection:
            raise UsageError(f"--collection '{spec}' must be ADAPTER=COLLECTION or COLLECTION")
        else:
            out[name] = collection
    return out


def adapter_map(specs: List[str]) -> dict:
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


def document_limits(sets: List[str], **flags):
    """documents.* settings: the defaults, then --set documents.KEY=VALUE, then the flags given."""
    others = [s for s in sets if not s.strip().startswith("documents.")]
    if others:
        raise UsageError(
            f"--set here takes documents.* settings only (`loraqa config --keys` lists them), got '{others[0]}'"
        )
    limits = cfgmod.load_config("default", sets=sets).documents
    for key, value in flags.items():
        if value is not None:
            setattr(limits, key, value)
    return limits


FileMemory = Annotated[
    Optional[int],
    typer.Option(
        "--file-memory-mb",
        min=1,
        help="Memory one file's reading may take, in MB (default 512; documents.file_memory_mb): a file that needs more is skipped in one line.",
    ),
]
FileSeconds = Annotated[
    Optional[float],
    typer.Option(
        "--file-seconds", min=0.01, help="Seconds one file's reading may take (default 60; documents.file_seconds)."
    ),
]
MaxFileMb = Annotated[
    Optional[float],
    typer.Option("--max-file-mb", min=0.001, help="Skip files larger than this (default 50; documents.max_file_mb)."),
]
FollowLinks = Annotated[
    bool,
    typer.Option(
        "--follow-links",
        help="Read links to files outside the folder being added (links to folders are never followed).",
    ),
]
DocumentSets = Annotated[
    List[str],
    typer.Option(
        "--set",
        "-s",
        help="A documents.* setting, e.g. --set documents.max_html_mb=20 (repeatable; `loraqa config --keys`).",
    ),
]
SearchMode = Annotated[
    Optional[str],
    typer.Option(
        "--mode",
        help="lexical (BM25), dense (the collection's vectors), hybrid (both, fused); default: hybrid when the collection has vectors, else lexical.",
    ),
]
EmbedderOpt = Annotated[
    Optional[str],
    typer.Option(
        "--embedder",
        help="A sentence-transformers model (folder or hub name) for dense and hybrid search; default: the one the collection recorded.",
    ),
]
EmbedderEngine = Annotated[
    Optional[str],
    typer.Option(
        "--embedder-engine",
        help="onnxruntime (int8, the fastest on CPUs; the default where installed), ctranslate2 (int8) or sentence-transformers (fp32).",
    ),
]
RerankModel = Annotated[
    Optional[str],
    typer.Option(
        "--rerank-model",
        help="A cross-encoder (a sentence-transformers CrossEncoder folder or hub name) that re-scores the search's best --rerank-candidates passages; the best of them are kept.",
    ),
]
RerankCandidates = Annotated[
    int,
    typer.Option(
        "--rerank-candidates", min=1, max=1000, help="Passages the cross-encoder re-scores (with --rerank-model)."
    ),
]
Where = Annotated[
    List[str],
    typer.Option(
        "--where",
        help="Search only passages where FIELD=VALUE (repeatable, all must hold): document (an id), source or title (a glob), page (N or N-M), meta.KEY (a JSONL field).",
    ),
]
