"""loraqa's own routes: answers with their evidence, adapter management, health."""

# No `from __future__ import annotations` here: FastAPI reads the annotations of the handlers
# and dependencies at run time to tell a Request or a body model from a query parameter.
import asyncio
import time

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from loraqa.errors import LoraqaError
from loraqa.inference.answerer import AUTO, BASE
from loraqa.serving.context import ApiError, ask, check_key, known_models, require_admin, state

MAX_BATCH_ITEMS = 64

router = APIRouter()


class AnswerRequest(BaseModel):
    question: str = Field(..., min_length=1, description="The question.")
    context: str | None = Field(None, description="The document to read the answer from (any length: read in windows).")
    adapter: str | None = Field(None, description=f"Adapter name; '{BASE}' for none, '{AUTO}' to choose by domain. "
                                                  "Default: the first loaded.")


class AnswerResponse(BaseModel):
    answer: str = Field(..., description="The answer; empty when no_answer is true.")
    adapter: str = Field(..., description="The adapter that answered.")
    score: float | None = Field(None, description="Length-normalised log-probability of the answer (or of the abstention): higher is surer.")
    no_answer: bool = Field(False, description="The model abstained in every window, or its best answer scored below the adapter's calibrated threshold.")
    start: int | None = Field(None, description="Character offset of the answer in the context, when it is quoted verbatim.")
    end: int | None = Field(None, description="Character offset just after the answer.")
    windows: int = Field(1, description="How many windows of the context were read.")
    route_score: float | None = Field(None, description=f"With adapter '{AUTO}': how well the chosen adapter's domain matched (cosine, 0-1).")
    latency_ms: float


class BatchRequest(BaseModel):
    requests: list[AnswerRequest] = Field(..., min_length=1)


class BatchResponse(BaseModel):
    answers: list[AnswerResponse]


class AdapterLoad(BaseModel):
    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    path: str = Field(..., min_length=1)


async def _answer(request: Request, reqs: list[AnswerRequest]) -> list[AnswerResponse]:
    start = time.perf_counter()
    answers = await ask(request, [{"question": r.question, "context": r.context, "adapter": r.adapter} for r in reqs])
    ms = round(1000 * (time.perf_counter() - start), 1)
    return [AnswerResponse(**a.as_dict(), latency_ms=ms) for a in answers]


@router.post("/v1/answer", response_model=AnswerResponse, dependencies=[Depends(check_key)])
async def answer(request: Request, req: AnswerRequest):
    return (await _answer(request, [req]))[0]


@router.post("/v1/answer/batch", response_model=BatchResponse, dependencies=[Depends(check_key)])
async def answer_batch(request: Request, req: BatchRequest):
    if len(req.requests) > MAX_BATCH_ITEMS:
        raise ApiError(413, f"more than {MAX_BATCH_ITEMS} questions in one batch request")
    return BatchResponse(answers=await _answer(request, req.requests))


@router.get("/v1/adapters", dependencies=[Depends(check_key)])
async def list_adapters(request: Request):
    answerer = state(request).answerer
    return {"default": answerer.default_adapter(), "base_model": answerer.base_model,
            "adapters": [{"name": n, "path": answerer.paths.get(n),
                          "template": answerer.configs[n].data.template if n in answerer.configs else None,
                          "domain": answerer.profiles[n].describe() if n in answerer.profiles else None}
                         for n in answerer.names]}


@router.post("/v1/adapters", status_code=201, dependencies=[Depends(require_admin)])
async def load_adapter(request: Request, req: AdapterLoad):
    """Checked against the base model (targets, rank, shapes) before it is attached; a failing
    load leaves the loaded adapters as they were."""
    answerer = state(request).answerer
    try:
        await asyncio.to_thread(answerer.add_adapter, req.name, req.path)
    except LoraqaError as exc:
        raise ApiError(exc.http_status, str(exc)) from None
    return {"loaded": req.name, "adapters": answerer.names}


@router.delete("/v1/adapters/{name}", dependencies=[Depends(require_admin)])
async def unload_adapter(request: Request, name: str):
    answerer = state(request).answerer
    try:
        answerer.remove_adapter(name)
    except LoraqaError as exc:
        raise ApiError(exc.http_status, str(exc)) from None
    return {"unloaded": name, "adapters": answerer.names}


@router.get("/health")
async def health(request: Request):
    s = state(request)
    return {"status": "ok", "adapters": s.answerer.names, "models": known_models(s), "batches": s.batcher.batches}
