"""loraqa's own routes: answers with their evidence, and health."""

# No `from __future__ import annotations` here: FastAPI reads the annotations of the handlers
# and dependencies at run time to tell a Request or a body model from a query parameter.
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from loraqa.inference.answerer import AUTO, BASE
from loraqa.serving.context import ask, known_models, state

router = APIRouter()


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: StrictStr = Field(..., min_length=1, description="The question.")
    context: StrictStr | None = Field(None, description="The document to read the answer from (any length: read in windows).")
    adapter: StrictStr | None = Field(None, max_length=64,
                                      description=f"Adapter name; '{BASE}' for none, '{AUTO}' to choose by domain. "
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
    model_config = ConfigDict(extra="forbid")
    requests: list[AnswerRequest] = Field(..., min_length=1)


class BatchResponse(BaseModel):
    answers: list[AnswerResponse]


async def _answer(request: Request, reqs: list[AnswerRequest]) -> list[AnswerResponse]:
    start = time.perf_counter()
    answers = await ask(request, [{"question": r.question, "context": r.context, "adapter": r.adapter} for r in reqs])
    ms = round(1000 * (time.perf_counter() - start), 1)
    return [AnswerResponse(**a.as_dict(), latency_ms=ms) for a in answers]


@router.post("/v1/answer", response_model=AnswerResponse)
async def answer(request: Request, req: AnswerRequest):
    return (await _answer(request, [req]))[0]


@router.post("/v1/answer/batch", response_model=BatchResponse)
async def answer_batch(request: Request, req: BatchRequest):
    return BatchResponse(answers=await _answer(request, req.requests))


@router.get("/health")
async def health(request: Request):
    """200 while the server can answer; 503 when its batcher has stopped (it cannot)."""
    s = state(request)
    body = {"status": "ok" if s.batcher.alive else "unavailable", "adapters": s.answerer.names,
            "models": known_models(s), "batches": s.batcher.batches, "queued_windows": s.batcher.queued_windows}
    return JSONResponse(body, status_code=200 if s.batcher.alive else 503)
