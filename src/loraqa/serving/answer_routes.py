"""loraqa's own routes: answers with their evidence (and citations, when read from a collection),
searching a collection, and health."""

# No `from __future__ import annotations` here: FastAPI reads the annotations of the handlers
# and dependencies at run time to tell a Request or a body model from a query parameter.
import asyncio
import time
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from loraqa.errors import LoraqaError
from loraqa.inference.answerer import AUTO, BASE
from loraqa.retrieval.filters import Filter
from loraqa.serving.context import ApiError, ask, key_scope, scope_of, state

router = APIRouter()


# a request's search settings, the same on /v1/answer and /v1/search
SearchModeName = Literal["lexical", "dense", "hybrid", "auto"]
SearchFilters = dict[StrictStr, StrictStr | StrictInt | list[StrictStr]]
FILTERS_HELP = (
    "Search only passages where each holds: document (an id, or a list), source or title (a glob), "
    'page ("N" or "N-M"), meta.KEY (a JSONL field).'
)


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: StrictStr = Field(..., min_length=1, description="The question.")
    context: StrictStr | None = Field(
        None, description="The document to read the answer from (any length: read in windows)."
    )
    adapter: StrictStr | None = Field(
        None,
        max_length=64,
        description=f"Adapter name; '{BASE}' for none, '{AUTO}' to choose by domain. Default: the first loaded.",
    )
    collection: StrictStr | None = Field(
        None,
        max_length=64,
        description="Without a context: the collection whose passages are read "
        "(default: the one bound to the adapter).",
    )
    mode: SearchModeName | None = Field(
        None,
        description="Without a context: how the collection is searched (default: the adapter's "
        "retrieval.mode; auto: hybrid when the collection has vectors, else lexical).",
    )
    filters: SearchFilters | None = Field(None, description=FILTERS_HELP)


class Citation(BaseModel):
    collection: str
    document: str = Field(..., description="The document's id in its collection.")
    title: str
    source: str = Field(..., description="The file (or file and line) the document was read from.")
    page: int | None = Field(None, description="The page, for documents with pages (PDF).")
    start: int = Field(
        ...,
        description="Character offset in the document's text: of the answer in the first citation, "
        "of the passage in the others.",
    )
    end: int
    passage_score: float = Field(..., description="How well the passage matched the question (BM25).")
    quote: str = Field(..., description="The answer as it stands in the document (first citation), or the passage.")


class AnswerResponse(BaseModel):
    answer: str = Field(..., description="The answer; empty when no_answer is true.")
    adapter: str = Field(..., description="The adapter that answered.")
    score: float | None = Field(
        None, description="Length-normalised log-probability of the answer (or of the abstention): higher is surer."
    )
    no_answer: bool = Field(
        False,
        description="The model abstained in every window, or its best answer scored below the adapter's calibrated threshold.",
    )
    start: int | None = Field(
        None, description="Character offset of the answer in the context, when it is quoted verbatim."
    )
    end: int | None = Field(None, description="Character offset just after the answer.")
    windows: int = Field(1, description="How many windows of the context were read.")
    route_score: float | None = Field(
        None, description=f"With adapter '{AUTO}': how well the chosen adapter's domain matched (cosine, 0-1)."
    )
    citations: list[Citation] | None = Field(
        None,
        description="Answered from a collection: where the answer was read, "
        "then the other passages read. Absent with a context.",
    )
    latency_ms: float


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    requests: list[AnswerRequest] = Field(..., min_length=1)


class BatchResponse(BaseModel):
    answers: list[AnswerResponse]


async def _answer(request: Request, reqs: list[AnswerRequest]) -> list[AnswerResponse]:
    start = time.perf_counter()
    answers = await ask(
        request,
        [
            {
                "question": r.question,
                "context": r.context,
                "adapter": r.adapter,
                "collection": r.collection,
                "mode": r.mode,
                "filters": r.filters,
            }
            for r in reqs
        ],
    )
    ms = round(1000 * (time.perf_counter() - start), 1)
    return [AnswerResponse(**a.as_dict(), latency_ms=ms) for a in answers]


@router.post("/v1/answer", response_model=AnswerResponse)
async def answer(request: Request, req: AnswerRequest):
    return (await _answer(request, [req]))[0]


@router.post("/v1/answer/batch", response_model=BatchResponse)
async def answer_batch(request: Request, req: BatchRequest):
    return BatchResponse(answers=await _answer(request, req.requests))


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: StrictStr = Field(
        ...,
        min_length=1,
        description="What to look for (the server's query limits apply: 1,000 characters and 100 words by default).",
    )
    collection: StrictStr = Field(..., min_length=1, max_length=64)
    k: StrictInt = Field(5, ge=1, le=100)
    mode: SearchModeName | None = Field(
        None,
        description="lexical (BM25), dense (vectors), hybrid (both, fused); default: hybrid when the collection "
        "has vectors, else lexical.",
    )
    filters: SearchFilters | None = Field(None, description=FILTERS_HELP)


class SearchResult(BaseModel):
    document: str
    title: str
    source: str
    page: int | None
    start: int
    end: int
    score: float = Field(..., description="Higher is better: BM25 (lexical), cosine (dense), fused in [0, 1] (hybrid).")
    text: str


class SearchResponse(BaseModel):
    results: list[SearchResult]


@router.post("/v1/search", response_model=SearchResponse)
async def search(request: Request, req: SearchRequest):
    """A collection's passages that best match the query (BM25), with where each sits in its document.
    Only collections the server exposes and the key's scope names can be searched."""
    s = state(request)
    try:
        s.access.collection(key_scope(request), req.collection)
        where = Filter.of(req.filters)
        hits = await asyncio.to_thread(s.answerer.library.search, req.collection, req.query, req.k, req.mode, where)
    except LoraqaError as exc:
        raise ApiError.of(exc, request) from None
    # the fields the response declares, read off each hit (its snippet and store ids stay out)
    return SearchResponse(results=[SearchResult.model_validate(h, from_attributes=True) for h in hits])


@router.get("/health")
async def health(request: Request):
    """200 while the server can answer; 503 when its batcher has stopped (it cannot). Without a
    valid key (when the server has keys) only the status; with one, the adapters it may use too."""
    s, scope = state(request), scope_of(request)
    body: dict[str, object] = {"status": "ok" if s.batcher.alive else "unavailable"}
    if scope is not None:
        body |= {
            "adapters": [n for n in s.answerer.names if scope.may_use(n)],
            "models": s.access.models(scope),
            "batches": s.batcher.batches,
            "queued_windows": s.batcher.queued,
        }
    return JSONResponse(body, status_code=200 if s.batcher.alive else 503)
