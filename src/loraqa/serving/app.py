"""The HTTP server: several adapters on one base model, every request's windows batched together.

Routes: loraqa's own (answer_routes: /v1/answer, /v1/answer/batch, /v1/adapters, /health), the
OpenAI-compatible ones (openai_routes: /v1/models, /v1/chat/completions, /v1/completions),
`/metrics` (Prometheus) and the demo page at `/`. One API key rule, one body-size limit, one
batcher for all of them.
"""

# No `from __future__ import annotations` here: FastAPI reads the annotations of the handlers
# and dependencies at run time to tell a Request or a body model from a query parameter.
import time
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from loraqa.inference.answerer import Answerer
from loraqa.inference.batching import Batcher
from loraqa.optional import require
from loraqa.serving import answer_routes, openai_routes
from loraqa.serving.context import ApiError, ServerState, check_key
from loraqa.serving.metrics import CONTENT_TYPE, ServerMetrics

MAX_CONTEXT_CHARS = 1_000_000  # a long document is read in windows; `--max-context-chars` changes it
UNCOUNTED = {"/metrics", "/health", "/", "/docs", "/openapi.json"}  # not API traffic


def body_limit(max_context_chars: int) -> int:
    """Bytes a request body may have: one full-size document as UTF-8 (up to 4 bytes a
    character, JSON escapes included at 2x), plus room for the rest of the request."""
    return 2 * max_context_chars + 256 * 1024


def _error(request: Request, status: int, message: str, code: str | None = None, param: str | None = None,
           headers: dict | None = None) -> JSONResponse:
    """OpenAI's error shape on the OpenAI routes (its client raises the matching error type),
    loraqa's `{"detail": ...}` elsewhere."""
    if request.url.path in openai_routes.OPENAI_PATHS:
        kind = {401: "authentication_error", 404: "not_found_error"}.get(status, "invalid_request_error")
        if status >= 500:
            kind = "server_error"
        body = {"error": {"message": message, "type": kind, "code": code, "param": param}}
    else:
        body = {"detail": message}
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(answerer: Answerer, api_key: str | None = None, window_ms: float = 10.0, max_batch: int = 32,
               max_context_chars: int = MAX_CONTEXT_CHARS) -> FastAPI:
    batcher = Batcher(answerer, window_ms=window_ms, max_batch=max_batch)
    metrics = ServerMetrics(queue_depth=lambda: batcher.queued_windows, adapters_loaded=lambda: len(answerer.configs))
    batcher.on_batch = metrics.batch_size.observe
    max_body = body_limit(max_context_chars)

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="loraqa", description="Question answering with LoRA adapters on one base model.",
                  version="1", lifespan=lifespan)
    app.state.loraqa = ServerState(answerer, batcher, metrics, api_key, max_context_chars)
    app.state.batcher = batcher

    @app.middleware("http")
    async def limit_and_count(request: Request, call_next):
        start = time.perf_counter()
        # Content-Length can be absent (chunked) or wrong: check the bytes actually received too.
        length = request.headers.get("content-length")
        too_big = length is not None and length.isdigit() and int(length) > max_body
        if not too_big and request.method in ("POST", "PUT"):
            too_big = len(await request.body()) > max_body
        if too_big:
            response = _error(request, 413, f"request body over {max_body} bytes", code="request_too_large")
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", request.url.path)
        if path not in UNCOUNTED:
            metrics.observe_request(getattr(request.state, "adapter", None) or "-", path, response.status_code,
                                    time.perf_counter() - start)
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return _error(request, exc.status, exc.message, exc.code, exc.param, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(request, exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        if request.url.path in openai_routes.OPENAI_PATHS:
            first = exc.errors()[0] if exc.errors() else {}
            return _error(request, 400, f"invalid request: {first.get('msg', 'bad body')}",
                          param=".".join(str(p) for p in first.get("loc", [])[1:]) or None)
        return JSONResponse({"detail": exc.errors()}, status_code=422)

    app.include_router(answer_routes.router)
    app.include_router(openai_routes.router)

    @app.get("/metrics", dependencies=[Depends(check_key)], include_in_schema=False)
    async def prometheus_metrics():
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def demo():
        return resources.files("loraqa.serving").joinpath("static", "index.html").read_text()

    return app


def run_server(adapters: dict[str, str], host: str, port: int, api_key: str | None, base_model: str | None,
               window_ms: float, max_batch: int, allow_pickle: bool = False,
               max_context_chars: int = MAX_CONTEXT_CHARS, engine: str = "pytorch") -> None:
    uvicorn = require("uvicorn", "loraqa serve")
    answerer = Answerer(adapters, base_model=base_model, allow_pickle=allow_pickle, engine=engine)
    app = create_app(answerer, api_key=api_key, window_ms=window_ms, max_batch=max_batch,
                     max_context_chars=max_context_chars)
    uvicorn.run(app, host=host, port=port, log_level="warning")
