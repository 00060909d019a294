"""OpenAI-compatible routes: `model` names the adapter (or `base`, or `auto` to choose by domain).

Same port, API key and batcher as /v1/answer, and the same answer for the same question,
passage and adapter. Chat: the last user message is the question; the system (and developer)
messages, joined, are the passage, unless the body's extra field `context` gives it; with no
passage at all, the passages of the model's collection (or the extra field `collection`) are
read, and the `loraqa` object carries the answer's citations.
Decoding is greedy: temperature and top_p are accepted and have no effect; parameters that
cannot be honoured (n > 1, tools, logprobs, stop, penalties...) are refused with a 400 that
names them. `stream: true` answers as server-sent events: the answer is generated whole, then
sent as a few chunks ending with `data: [DONE]`. Every response carries `usage` and a `loraqa`
object with the evidence: adapter, score, no_answer, start, end, windows, route_score.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at run time.
import json
import re
import time
import uuid
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from loraqa.inference.reading import Answer
from loraqa.serving.context import ApiError, ask, key_scope, state

router = APIRouter()
OPENAI_PATHS = ("/v1/models", "/v1/chat/completions", "/v1/completions")
Number = StrictInt | StrictFloat

# parameter -> the value that asks for nothing loraqa cannot do
REFUSED_UNLESS = {
    "n": 1,
    "logprobs": False,
    "top_logprobs": None,
    "logit_bias": None,
    "stop": None,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "tools": None,
    "tool_choice": None,
    "functions": None,
    "function_call": None,
    "audio": None,
    "prediction": None,
    "web_search_options": None,
    "best_of": 1,
    "echo": False,
    "suffix": None,
}


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: StrictStr
    text: StrictStr | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_call_id, ... carry nothing loraqa reads
    role: StrictStr
    content: StrictStr | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: StrictBool = False


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: StrictStr = "text"


class OpenAIRequest(BaseModel):
    """What both routes take. Unknown fields are refused (400, naming the field); sampling
    parameters are accepted and have no effect (decoding is greedy and deterministic); the
    fields of REFUSED_UNLESS are refused unless they ask for nothing."""

    model_config = ConfigDict(extra="forbid")
    model: StrictStr = Field(..., min_length=1, max_length=64)
    stream: StrictBool = False
    max_tokens: StrictInt | None = Field(None, ge=1)
    context: StrictStr | None = Field(None, description="loraqa's extra field: the passage to read.")
    collection: StrictStr | None = Field(
        None,
        max_length=64,
        description="loraqa's extra field: with no passage, the collection to read (default: the model's).",
    )
    mode: Literal["lexical", "dense", "hybrid", "auto"] | None = Field(
        None, description="loraqa's extra field: how that collection is searched."
    )
    filters: dict[StrictStr, StrictStr | StrictInt | list[StrictStr]] | None = Field(
        None, description="loraqa's extra field: search only passages where each holds (as /v1/search's filters)."
    )
    # accepted, without effect
    temperature: Number | None = None
    top_p: Number | None = None
    seed: StrictInt | None = None
    user: StrictStr | None = None
    metadata: dict[str, StrictStr] | None = None
    store: StrictBool | None = None
    service_tier: StrictStr | None = None
    parallel_tool_calls: StrictBool | None = None
    prompt_cache_key: StrictStr | None = None
    safety_identifier: StrictStr | None = None
    stream_options: StreamOptions | None = None
    reasoning_effort: StrictStr | None = None
    verbosity: StrictStr | None = None
    modalities: list[StrictStr] | None = None
    response_format: ResponseFormat | None = None
    # refused unless they ask for nothing (REFUSED_UNLESS)
    n: StrictInt | None = None
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = None
    logit_bias: dict[str, Number] | None = None
    stop: StrictStr | list[StrictStr] | None = None
    presence_penalty: Number | None = None
    frequency_penalty: Number | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    audio: Any = None
    prediction: Any = None
    web_search_options: Any = None
    best_of: StrictInt | None = None
    echo: StrictBool | None = None
    suffix: StrictStr | None = None


class ChatRequest(OpenAIRequest):
    messages: list[Message] = Field(..., min_length=1, max_length=1024)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)


class CompletionRequest(OpenAIRequest):
    prompt: StrictStr | list[StrictStr]


def _check(request: Request, body: OpenAIRequest) -> None:
    for key, allowed in REFUSED_UNLESS.items():
        value = getattr(body, key)
        if value not in (allowed, None, [], {}):
            raise ApiError(
                400,
                f"'{key}' is not supported by loraqa (it answers one greedy, extractive-style "
                f"answer per question); leave it out",
                code="unsupported_parameter",
                param=key,
            )
    if body.modalities not in (None, ["text"]):
        raise ApiError(
            400, "'modalities': only text output is supported", code="unsupported_parameter", param="modalities"
        )
    if body.response_format is not None and body.response_format.type != "text":
        raise ApiError(
            400,
            "'response_format': only plain-text responses are supported",
            code="unsupported_parameter",
            param="response_format",
        )
    if body.model not in state(request).access.models(key_scope(request)):
        raise ApiError(
            404,
            "no such model is available to this key; GET /v1/models lists those that are",
            code="model_not_found",
            param="model",
        )


def _text(content, role: str) -> str:
    """A message's text: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(p.type == "text" for p in content):
        return "".join(p.text or "" for p in content)
    if content is None:
        return ""
    raise ApiError(400, f"only text content is supported in {role} messages", param="messages")


def _chat_question(body: ChatRequest) -> tuple[str, str | None]:
    users = [m for m in body.messages if m.role == "user"]
    if not users:
        raise ApiError(400, "the messages hold no user message: the last one is the question", param="messages")
    question = _text(users[-1].content, "user").strip()
    if not question:
        raise ApiError(400, "the last user message is empty", param="messages")
    passages = [_text(m.content, m.role) for m in body.messages if m.role in ("system", "developer")]
    context = body.context if body.context is not None else ("\n\n".join(passages) or None)
    return question, context


def _evidence(a: Answer) -> dict:
    return {k: v for k, v in a.as_dict().items() if k != "answer"}


def _usage(answers: list[Answer]) -> dict:
    prompt = sum(a.prompt_tokens for a in answers)
    completion = sum(a.completion_tokens for a in answers)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish(a: Answer) -> str:
    return "stop" if a.stopped else "length"


def _pieces(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text) or [""]


def _sse(events) -> StreamingResponse:
    def stream():
        for event in events:
            yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get("/v1/models")
async def models(request: Request):
    """The models (adapters, `base`, `auto`) the key may name."""
    s, scope = state(request), key_scope(request)

    def domain(name: str) -> dict:
        described = s.access.describe(name, scope)
        return {"loraqa": {"domain": described}} if described else {}

    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "loraqa", **domain(name)}
            for name in s.access.models(scope)
        ],
    }


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, body: ChatRequest):
    _check(request, body)
    question, context = _chat_question(body)
    limit = body.max_completion_tokens or body.max_tokens
    [a] = await ask(
        request,
        [
            {
                "question": question,
                "context": context,
                "adapter": body.model,
                "collection": body.collection,
                "mode": body.mode,
                "filters": body.filters,
                "max_new_tokens": limit,
            }
        ],
    )
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": a.adapter}
    if not body.stream:
        return {
            **head,
            "object": "chat.completion",
            "usage": _usage([a]),
            "loraqa": _evidence(a),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": a.answer},
                    "finish_reason": _finish(a),
                    "logprobs": None,
                }
            ],
        }
    chunk = {**head, "object": "chat.completion.chunk"}
    events = [
        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    ]
    events += [
        {**chunk, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in _pieces(a.answer)
    ]
    events.append(
        {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": _finish(a)}], "loraqa": _evidence(a)}
    )
    if body.stream_options is not None and body.stream_options.include_usage:
        events.append({**chunk, "choices": [], "usage": _usage([a])})
    return _sse(events)


@router.post("/v1/completions")
async def completions(request: Request, body: CompletionRequest):
    _check(request, body)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not prompts or not all(p.strip() for p in prompts):
        raise ApiError(400, "'prompt' must be the question: a non-empty string (or a list of them)", param="prompt")
    answers = await ask(
        request,
        [
            {
                "question": p.strip(),
                "context": body.context,
                "adapter": body.model,
                "collection": body.collection,
                "mode": body.mode,
                "filters": body.filters,
                "max_new_tokens": body.max_tokens,
            }
            for p in prompts
        ],
    )
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": answers[0].adapter}
    if not body.stream:
        return {
            **head,
            "object": "text_completion",
            "usage": _usage(answers),
            "loraqa": [_evidence(a) for a in answers] if len(answers) > 1 else _evidence(answers[0]),
            "choices": [
                {"index": i, "text": a.answer, "finish_reason": _finish(a), "logprobs": None}
                for i, a in enumerate(answers)
            ],
        }
    chunk = {**head, "object": "text_completion"}
    events = [
        {**chunk, "choices": [{"index": i, "text": p, "finish_reason": None, "logprobs": None}]}
        for i, a in enumerate(answers)
        for p in _pieces(a.answer)
    ]
    events += [
        {
            **chunk,
            "choices": [{"index": i, "text": "", "finish_reason": _finish(a), "logprobs": None}],
            "loraqa": _evidence(a),
        }
        for i, a in enumerate(answers)
    ]
    return _sse(events)
