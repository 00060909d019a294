"""The HTTP server: several adapters on one base model, every request's windows batched together.

Routes: loraqa's own (answer_routes: /v1/answer, /v1/answer/batch, /health; adapter_routes:
/v1/adapters), the OpenAI-compatible ones (openai_routes: /v1/models, /v1/chat/completions,
/v1/completions), `/metrics` (Prometheus) and the demo page at `/`. One request guard (host,
keys, content type, body size, request ids, errors: serving/guard.py), one set of limits
(serving/limits.py), one batcher for all of them.
"""

# No `from __future__ import annotations` here: FastAPI reads the annotations of the handlers
# and dependencies at run time to tell a Request or a body model from a query parameter.
from contextlib import asynccontextmanager
from dataclasses import replace
from importlib import resources
from pathlib import Path

from loraqa.errors import UsageError
from loraqa.optional import require_extra

require_extra("serve", "loraqa's HTTP server")

# the imports below come after the check that names the pip extra (E402 allowed in pyproject.toml)
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from loraqa.adapters.folder import resolve_adapter
from loraqa.errors import LoraqaError
from loraqa.inference.answerer import BASE, Answerer
from loraqa.inference.engines import engine_type
from loraqa.serving import adapter_routes, answer_routes, openai_routes
from loraqa.serving.access import Access
from loraqa.serving.adapter_cache import AdapterCache
from loraqa.serving.batching import Batcher
from loraqa.serving.context import ApiError, ServerState
from loraqa.serving.guard import BodyTooLarge, RequestGuard, allowed_hosts
from loraqa.serving.memory import bound_kernel_cache
from loraqa.serving.metrics import CONTENT_TYPE, ServerMetrics
from loraqa.serving.options import ServedModels, ServeOptions
from loraqa.serving.remote_batcher import RemoteBatcher
from loraqa.serving.scopes import KeyRing
from loraqa.serving.startup import say_ready

# not API traffic: not counted in the metrics
UNCOUNTED = {"/metrics", "/health", "/", "/docs", "/openapi.json"}


def error_body(path: str, status: int, message: str, code: str | None = None, param: str | None = None) -> dict:
    """OpenAI's error shape on the OpenAI routes (its client raises the matching error type),
    loraqa's `{"detail": ...}` elsewhere."""
    if path in openai_routes.OPENAI_PATHS:
        kind = {401: "authentication_error", 404: "not_found_error"}.get(status, "invalid_request_error")
        if status >= 500:
            kind = "server_error"
        return {"error": {"message": message, "type": kind, "code": code, "param": param}}
    return {"detail": message}


def _validation_response(path: str, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if path not in openai_routes.OPENAI_PATHS:
        return JSONResponse(
            {"detail": [{k: e.get(k) for k in ("type", "loc", "msg")} for e in errors]}, status_code=422
        )
    first = errors[0] if errors else {}
    param = ".".join(str(p) for p in first.get("loc", [])[1:]) or None
    if first.get("type") == "extra_forbidden":
        return JSONResponse(
            error_body(path, 400, f"unrecognised request argument: {param}", "unsupported_parameter", param),
            status_code=400,
        )
    return JSONResponse(
        error_body(path, 400, f"invalid request: {first.get('msg', 'bad body')}", param=param), status_code=400
    )


def model_side(
    answerer: Answerer, o: ServeOptions, remote: RemoteBatcher | None = None
) -> tuple[Batcher | RemoteBatcher, ServerMetrics, AdapterCache]:
    """What answers a server's requests: its batcher, its metrics and its adapter cache (on
    demand from the adapter root, at most max_loaded attached). With `remote`, the model
    replicas of a Ray Serve app answer (serving/ray_app.py): the cache here is a catalogue only
    (names, domain profiles for `auto`), each replica has its own that loads.

    Raises:
        UsageError: A bad adapter root, --max-loaded or --pin.
    """
    limits, max_loaded, pin = o.limits, o.max_loaded, o.pin
    root = Path(o.adapter_root).resolve() if o.adapter_root else None
    if root is not None and not root.is_dir():
        raise UsageError(f"the adapter root {o.adapter_root} is not a folder")
    registry = answerer.registry
    if len(registry.adapters) > limits.max_adapters:
        raise UsageError(
            f"{len(registry.adapters)} adapters given, more than the server's limit of {limits.max_adapters}"
        )
    registry.max_adapters = limits.max_adapters  # the server's limit governs later loads
    if remote is not None:
        batcher: Batcher | RemoteBatcher = remote
        metrics = ServerMetrics(queue_depth=lambda: remote.queued, adapters_loaded=lambda: remote.loaded)
        remote.metrics = metrics
    else:
        local = batcher = Batcher(
            answerer, window_ms=o.window_ms, max_batch=o.max_batch, limits=limits, max_batch_tokens=o.max_batch_tokens
        )
        metrics = ServerMetrics(queue_depth=lambda: local.queued, adapters_loaded=lambda: len(registry.adapters))
        local.on_batch = metrics.batch_size.observe
    if root is not None:
        if max_loaded is not None and max_loaded < 1:
            raise UsageError(f"--max-loaded must be at least 1, got {max_loaded}")
        cap = max_loaded or limits.max_adapters
        registry.max_adapters = max(limits.max_adapters, cap)
        batcher.pause_between_batches_s = 0.002
    elif pin or max_loaded:
        raise UsageError("--pin and --max-loaded manage the adapters of an adapter root: give --adapter-root")
    adapter_cache = AdapterCache(
        registry,
        batcher,
        root,
        max_loaded=cap if root is not None else None,
        pinned=set(pin),
        max_bytes=limits.max_adapter_mb * 2**20,
        metrics=metrics,
        loads_here=remote is None,
    )
    return batcher, metrics, adapter_cache


def create_app(answerer: Answerer, options: ServeOptions | None = None, remote: RemoteBatcher | None = None) -> FastAPI:
    """The HTTP app (FastAPI) over one Answerer: loraqa's routes, the OpenAI-compatible ones,
    Prometheus metrics and the demo page, behind one request guard and one batcher.

    With an adapter root, every adapter in it can be asked for and is loaded on demand, at most
    max_loaded attached, the least recently used detached first, those pinned (and those given
    at start) kept. Collections are reachable when bound to an adapter or exposed (and in a
    key's scope); the store they are in is never shown to a key that is not an admin's.

    Args:
        answerer: The adapters and base model to serve.
        options: Keys, address, batching, limits, adapter root, collections (ServeOptions).
        remote: Answer through the model replicas of a Ray Serve app instead of this process.

    Returns:
        The app, for uvicorn, Ray Serve or a test client.

    Raises:
        UsageError: A bad keys file, adapter root, limit or unknown collection, at start.
    """
    o = options or ServeOptions()
    limits = o.limits
    keys = KeyRing.build(o.api_key, o.admin_key, o.keys_file)
    for name in o.expose_collections:
        answerer.library.open(name)  # an unknown collection is refused at start
    batcher, metrics, adapter_cache = model_side(answerer, o, remote)
    root, registry = adapter_cache.root, answerer.registry

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        await adapter_cache.load_pinned()
        yield
        await batcher.stop()

    app = FastAPI(
        title="loraqa",
        description="Question answering with LoRA adapters on one base model.",
        version="1",
        lifespan=lifespan,
    )
    access = Access(answerer, adapter_cache, o.expose_collections, root, o.store)
    app.state.loraqa = ServerState(answerer, batcher, metrics, keys, limits, root, access, adapter_cache)
    app.state.batcher = batcher

    def adapter_label(name: str | None) -> str:
        if name is None:
            return "-"
        if name in ("mixed", BASE) or registry.is_attached(name):
            return name
        # through Ray the adapters are attached on the replicas: the root's names (the operator's
        # set, not the clients') label the requests
        return name if remote is not None and name in adapter_cache.catalogue else "unknown"

    def observe(route: str, adapter: str, status: int, seconds: float, key: str) -> None:
        if route not in UNCOUNTED:
            metrics.observe_request(adapter, route, status, seconds, key)

    if o.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(o.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["authorization", "content-type", "x-request-id"],
            expose_headers=["x-request-id"],
        )
    # added last: the outermost of the app's own middleware, before CORS and every route
    app.add_middleware(
        RequestGuard,
        keys=keys,
        hosts=allowed_hosts(o.host, o.allowed_host),
        max_body=limits.max_body_bytes,
        render_error=error_body,
        observe=observe,
        adapter_label=adapter_label,
    )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse(
            error_body(request.url.path, exc.status, exc.message, exc.code, exc.param),
            status_code=exc.status,
            headers=exc.headers,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        headers = dict(getattr(exc, "headers", None) or {})
        if isinstance(exc, BodyTooLarge):  # closed: the server must not read on what is still coming
            body = error_body(
                request.url.path, 413, f"request body over {limits.max_body_bytes} bytes", "request_too_large"
            )
            return JSONResponse(body, status_code=413, headers=headers | {"Connection": "close"})
        return JSONResponse(
            error_body(request.url.path, exc.status_code, str(exc.detail)),
            status_code=exc.status_code,
            headers=headers or None,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return _validation_response(request.url.path, exc)

    app.include_router(answer_routes.router)
    app.include_router(adapter_routes.router)
    app.include_router(openai_routes.router)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics():
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def demo():
        return resources.files("loraqa.serving").joinpath("static", "index.html").read_text()

    return app


def root_base_model(root: Path, engine: str = "pytorch") -> str | None:
    """For a server started with no adapter loaded: the base model of the first LoRA adapter in
    an adapter root or, for CTranslate2 (whose exports are whole models), the first export's
    folder, which holds the tokenizer they all share."""
    kind = engine_type(engine)
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            ref = resolve_adapter(folder)
        except LoraqaError:
            continue
        base = kind.base_in(ref)
        if base is not None:
            return base
    return None


def with_root_base(models: ServedModels, options: ServeOptions) -> ServedModels:
    """The models to load: with no adapter and no base model given, the adapter root's base."""
    if not models.adapters and not models.base_model and options.adapter_root:
        return replace(models, base_model=root_base_model(Path(options.adapter_root), models.engine))
    return models


def run_server(models: ServedModels, options: ServeOptions) -> None:
    """Load the models and serve them until stopped."""
    uvicorn = require_extra("serve", "loraqa's HTTP server")["uvicorn"]
    bound_kernel_cache()
    answerer = with_root_base(models, options).load(options)
    app = create_app(answerer, options)
    say_ready(answerer, "server")
    uvicorn.run(app, host=options.host, port=options.port, log_level="warning")
