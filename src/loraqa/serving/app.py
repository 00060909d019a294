"""HTTP API and demo page: several adapters on one base model, requests batched across adapters."""

# No `from __future__ import annotations` here: FastAPI reads the annotations of the handlers
# and dependencies at run time to tell a Request or a body model from a query parameter.
import asyncio
import hmac
import time
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from loraqa.errors import LoraqaError
from loraqa.inference.answerer import BASE, Answerer
from loraqa.inference.batching import Batcher
from loraqa.optional import require

MAX_QUESTION_CHARS = 1_000
MAX_CONTEXT_CHARS = 1_000_000  # a long document is read in windows; `--max-context-chars` changes it
MAX_BATCH_ITEMS = 64


def body_limit(max_context_chars: int) -> int:
    """Bytes a request body may have: one full-size document as UTF-8 (up to 4 bytes a
    character, JSON escapes included at 2x), plus room for the rest of the request."""
    return 2 * max_context_chars + 256 * 1024


class AnswerRequest(BaseModel):
    question: str = Field(..., min_length=1, description="The question.")
    context: str | None = Field(None, description="The passage to read the answer from.")
    adapter: str | None = Field(None, description=f"Adapter name; '{BASE}' for none. Default: the first loaded.")


class AnswerResponse(BaseModel):
    answer: str = Field(..., description="The answer; empty when no_answer is true.")
    adapter: str = Field(..., description="The adapter that answered.")
    score: float | None = Field(None, description="Length-normalised log-probability of the answer (or of the abstention): higher is surer.")
    no_answer: bool = Field(False, description="The model abstained in every window, or its best answer scored below the adapter's calibrated threshold.")
    start: int | None = Field(None, description="Character offset of the answer in the context, when it is quoted verbatim.")
    end: int | None = Field(None, description="Character offset just after the answer.")
    windows: int = Field(1, description="How many windows of the context were read.")
    latency_ms: float


class BatchRequest(BaseModel):
    requests: list[AnswerRequest] = Field(..., min_length=1)


class BatchResponse(BaseModel):
    answers: list[AnswerResponse]


class AdapterLoad(BaseModel):
    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    path: str = Field(..., min_length=1)


def create_app(answerer, api_key: str | None = None, window_ms: float = 10.0, max_batch: int = 32,
               max_context_chars: int = MAX_CONTEXT_CHARS):
    batcher = Batcher(answerer, window_ms=window_ms, max_batch=max_batch)
    max_body = body_limit(max_context_chars)

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="loraqa", description="Question answering with LoRA adapters on one base model.",
                  version="1", lifespan=lifespan)
    app.state.batcher = batcher

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        # Content-Length can be absent (chunked) or wrong: check the bytes actually received too.
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body:
            return JSONResponse({"detail": f"request body over {max_body} bytes"}, status_code=413)
        if request.method in ("POST", "PUT"):
            body = await request.body()
            if len(body) > max_body:
                return JSONResponse({"detail": f"request body over {max_body} bytes"}, status_code=413)
        return await call_next(request)

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                headers={"WWW-Authenticate": "Bearer"})

    def check_request(req: AnswerRequest) -> str:
        if len(req.question) > MAX_QUESTION_CHARS:
            raise HTTPException(413, f"question longer than {MAX_QUESTION_CHARS} characters")
        if req.context and len(req.context) > max_context_chars:
            raise HTTPException(413, f"context longer than {max_context_chars} characters "
                                     "(the server's --max-context-chars)")
        name = req.adapter or answerer.default_adapter()
        if name not in answerer.names:
            raise HTTPException(404, f"unknown adapter '{name}'; loaded: {', '.join(answerer.names)}")
        return name

    async def answer_all(reqs: list[AnswerRequest]) -> list[AnswerResponse]:
        names = [check_request(r) for r in reqs]
        start = time.perf_counter()
        try:
            answers = await batcher.submit([{"question": r.question, "context": r.context, "adapter": n}
                                            for r, n in zip(reqs, names)])
        except LoraqaError as exc:  # e.g. the adapter was unloaded while the request waited
            raise HTTPException(exc.http_status, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - report, keep serving
            raise HTTPException(500, f"answering failed: {type(exc).__name__}: {str(exc)[:200]}") from None
        ms = round(1000 * (time.perf_counter() - start), 1)
        return [AnswerResponse(**a.as_dict(), latency_ms=ms) for a in answers]

    @app.post("/v1/answer", response_model=AnswerResponse, dependencies=[Depends(check_key)])
    async def answer(req: AnswerRequest):
        return (await answer_all([req]))[0]

    @app.post("/v1/answer/batch", response_model=BatchResponse, dependencies=[Depends(check_key)])
    async def answer_batch(req: BatchRequest):
        if len(req.requests) > MAX_BATCH_ITEMS:
            raise HTTPException(413, f"more than {MAX_BATCH_ITEMS} questions in one batch request")
        return BatchResponse(answers=await answer_all(req.requests))

    @app.get("/v1/adapters", dependencies=[Depends(check_key)])
    async def list_adapters():
        return {"default": answerer.default_adapter(), "base_model": answerer.base_model,
                "adapters": [{"name": n, "path": answerer.paths.get(n),
                              "template": answerer.configs[n].data.template if n in answerer.configs else None}
                             for n in answerer.names]}

    def require_admin(request: Request) -> None:
        if api_key is None:
            raise HTTPException(403, "loading and unloading adapters needs an API key: restart with --api-key KEY")
        check_key(request)

    @app.post("/v1/adapters", status_code=201, dependencies=[Depends(require_admin)])
    async def load_adapter(req: AdapterLoad):
        try:
            await asyncio.to_thread(answerer.add_adapter, req.name, req.path)
        except LoraqaError as exc:
            raise HTTPException(exc.http_status, str(exc)) from None
        return {"loaded": req.name, "adapters": answerer.names}

    @app.delete("/v1/adapters/{name}", dependencies=[Depends(require_admin)])
    async def unload_adapter(name: str):
        try:
            answerer.remove_adapter(name)
        except LoraqaError as exc:
            raise HTTPException(exc.http_status, str(exc)) from None
        return {"unloaded": name, "adapters": answerer.names}

    @app.get("/health")
    async def health():
        return {"status": "ok", "adapters": answerer.names, "batches": batcher.batches}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def demo():
        return resources.files("loraqa.serving").joinpath("static", "index.html").read_text()

    return app


def run_server(adapters: dict[str, str], host: str, port: int, api_key: str | None, base_model: str | None,
               window_ms: float, max_batch: int, allow_pickle: bool = False,
               max_context_chars: int = MAX_CONTEXT_CHARS) -> None:
    uvicorn = require("uvicorn", "loraqa serve")
    answerer = Answerer(adapters, base_model=base_model, allow_pickle=allow_pickle)
    app = create_app(answerer, api_key=api_key, window_ms=window_ms, max_batch=max_batch,
                     max_context_chars=max_context_chars)
    uvicorn.run(app, host=host, port=port, log_level="warning")
