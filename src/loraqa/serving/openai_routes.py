"""OpenAI-compatible routes: `model` names the adapter (or `base`, or `auto` to choose by domain).

Same port, API key and batcher as /v1/answer, and the same answer for the same question,
passage and adapter. Chat: the last user message is the question; the system (and developer)
messages, joined, are the passage, unless the body's extra field `context` gives it.
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

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from loraqa.inference.reading import Answer
from loraqa.serving.context import ApiError, ask, check_key, known_models, state

router = APIRouter(dependencies=[Depends(check_key)])
OPENAI_PATHS = ("/v1/models", "/v1/chat/completions", "/v1/completions")

# accepted, without effect: decoding is greedy and deterministic
IGNORED = {"temperature", "top_p", "seed", "user", "metadata", "store", "service_tier", "parallel_tool_calls",
           "prompt_cache_key", "safety_identifier", "stream_options", "reasoning_effort", "verbosity"}
# parameter -> the value that asks for nothing loraqa cannot do
REFUSED_UNLESS = {"n": 1, "logprobs": False, "top_logprobs": None, "logit_bias": None, "stop": None,
                  "presence_penalty": 0, "frequency_penalty": 0, "tools": None, "tool_choice": None,
                  "functions": None, "function_call": None, "audio": None, "prediction": None,
                  "web_search_options": None, "best_of": 1, "echo": False, "suffix": None}
KNOWN = {"model", "messages", "prompt", "stream", "max_tokens", "max_completion_tokens", "context",
         "modalities", "response_format"} | IGNORED | set(REFUSED_UNLESS)


def _refuse_unsupported(body: dict) -> None:
    for key, value in body.items():
        if key not in KNOWN:
            raise ApiError(400, f"unrecognised request argument: {key}", code="unsupported_parameter", param=key)
        if key in REFUSED_UNLESS and value not in (REFUSED_UNLESS[key], None, [], {}):
            raise ApiError(400, f"'{key}' is not supported by loraqa (it answers one greedy, extractive-style "
                                f"answer per question); leave it out", code="unsupported_parameter", param=key)
    if body.get("modalities") not in (None, ["text"]):
        raise ApiError(400, "'modalities': only text output is supported", code="unsupported_parameter",
                       param="modalities")
    if (body.get("response_format") or {}).get("type", "text") != "text":
        raise ApiError(400, "'response_format': only plain-text responses are supported", code="unsupported_parameter",
                       param="response_format")


async def _body(request: Request) -> dict:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise ApiError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    _refuse_unsupported(body)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise ApiError(400, "'model' is required: an adapter name, 'base' or 'auto' (GET /v1/models)", param="model")
    if body["model"] not in known_models(state(request)):
        raise ApiError(404, f"the model '{body['model']}' does not exist; loaded: {', '.join(known_models(state(request)))}",
                       code="model_not_found", param="model")
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ApiError(400, "max_tokens must be a positive integer", param="max_tokens")
    if body.get("context") is not None and not isinstance(body["context"], str):
        raise ApiError(400, "'context' must be a string: the passage to read", param="context")
    return body


def _text(content, role: str) -> str:
    """A message's text: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(p.get("text", "") for p in content)
    raise ApiError(400, f"only text content is supported in {role} messages", param="messages")


def _chat_question(body: dict) -> tuple[str, str | None]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise ApiError(400, "'messages' must be a non-empty list of {role, content}", param="messages")
    users = [m for m in messages if m.get("role") == "user"]
    if not users:
        raise ApiError(400, "the messages hold no user message: the last one is the question", param="messages")
    question = _text(users[-1].get("content"), "user").strip()
    if not question:
        raise ApiError(400, "the last user message is empty", param="messages")
    passages = [_text(m.get("content"), m["role"]) for m in messages if m.get("role") in ("system", "developer")]
    context = body.get("context") if body.get("context") is not None else ("\n\n".join(passages) or None)
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
    s = state(request)
    profiles = s.answerer.profiles
    return {"object": "list", "data": [
        {"id": name, "object": "model", "created": 0, "owned_by": "loraqa",
         **({"loraqa": {"domain": profiles[name].describe()}} if name in profiles else {})}
        for name in known_models(s)]}


@router.post("/v1/chat/completions")
async def chat_completions(request: Request):
    body = await _body(request)
    question, context = _chat_question(body)
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    [a] = await ask(request, [{"question": question, "context": context, "adapter": body["model"],
                               "max_new_tokens": limit}])
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": a.adapter}
    if not body.get("stream"):
        return {**head, "object": "chat.completion", "usage": _usage([a]), "loraqa": _evidence(a),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": a.answer},
                             "finish_reason": _finish(a), "logprobs": None}]}
    chunk = {**head, "object": "chat.completion.chunk"}
    events = [{**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    events += [{**chunk, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
               for p in _pieces(a.answer)]
    events.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": _finish(a)}], "loraqa": _evidence(a)})
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append({**chunk, "choices": [], "usage": _usage([a])})
    return _sse(events)


@router.post("/v1/completions")
async def completions(request: Request):
    body = await _body(request)
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ApiError(400, "'prompt' must be the question: a non-empty string (or a list of them)", param="prompt")
    limit = body.get("max_tokens")
    answers = await ask(request, [{"question": p.strip(), "context": body.get("context"), "adapter": body["model"],
                                   "max_new_tokens": limit} for p in prompts])
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": answers[0].adapter}
    if not body.get("stream"):
        return {**head, "object": "text_completion", "usage": _usage(answers),
                "loraqa": [_evidence(a) for a in answers] if len(answers) > 1 else _evidence(answers[0]),
                "choices": [{"index": i, "text": a.answer, "finish_reason": _finish(a), "logprobs": None}
                            for i, a in enumerate(answers)]}
    chunk = {**head, "object": "text_completion"}
    events = [{**chunk, "choices": [{"index": i, "text": p, "finish_reason": None, "logprobs": None}]}
              for i, a in enumerate(answers) for p in _pieces(a.answer)]
    events += [{**chunk, "choices": [{"index": i, "text": "", "finish_reason": _finish(a), "logprobs": None}],
                "loraqa": _evidence(a)} for i, a in enumerate(answers)]
    return _sse(events)
