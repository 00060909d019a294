"""What every route shares: the server's state, errors, and asking the batcher.

Errors are raised as ApiError (a status, a message, an optional machine-readable code and the
offending parameter); the app renders them as `{"detail": ...}` on loraqa's own routes and as
OpenAI's `{"error": {"message", "type", "code", "param"}}` on the OpenAI-compatible ones, so each
kind of client gets the shape it parses. The status always comes from the error's type; what
the message may say depends on the key (serving/access.py). An error that is not a LoraqaError
is the server's own fault: it propagates to the request guard, which logs it and answers a
generic 500.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import Request

from loraqa.errors import AdapterNotFound, LoraqaError, UnknownCollection
from loraqa.inference.answerer import AUTO, Answerer
from loraqa.inference.reading import Answer
from loraqa.serving.access import Access
from loraqa.serving.adapter_cache import AdapterCache
from loraqa.serving.batching import Batcher, ClientGone
from loraqa.serving.limits import ServerLimits
from loraqa.serving.metrics import ServerMetrics
from loraqa.serving.remote_batcher import RemoteBatcher
from loraqa.serving.scopes import KeyRing, Scope


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, code: str | None = None, param: str | None = None, headers: dict | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.headers = status, message, code, param, headers

    @classmethod
    def of(cls, exc: LoraqaError, request: Request, code: str | None = None, param: str | None = None) -> ApiError:
        """The error as this request's key may see it (serving/access.py: nothing about what
        exists beyond its scope, no server-side path unless it is an admin's)."""
        retry = getattr(exc, "retry_after", None)
        if code is None and isinstance(exc, AdapterNotFound):
            code = "model_not_found"
        elif code is None and isinstance(exc, UnknownCollection):
            code = "collection_not_found"
        message = state(request).access.error(exc, scope_of(request))
        return cls(exc.http_status, message, code, param, {"Retry-After": str(retry)} if retry else None)


@dataclass
class ServerState:
    answerer: Answerer
    batcher: Batcher | RemoteBatcher  # RemoteBatcher: answered by the model replicas of a Ray app
    metrics: ServerMetrics
    keys: KeyRing
    limits: ServerLimits
    adapter_root: Path | None  # where POST /v1/adapters may load from; None: hot loading is off
    access: Access  # what each key may reach and see
    adapter_cache: AdapterCache  # the adapters requests may name, loaded on demand from the root


def state(request: Request) -> ServerState:
    return request.app.state.loraqa


def scope_of(request: Request) -> Scope | None:
    """The request's key's scope, found by the guard (None: no valid key, on an open route)."""
    return request.scope.get("state", {}).get("scope")


def key_scope(request: Request) -> Scope:
    """The scope of a request to a protected route: the guard let it through, so it came with a
    valid key (or the server has none: OPEN)."""
    scope = scope_of(request)
    if scope is None:  # a route missing from the guard's open paths would be answered without a key
        raise ApiError(401, "missing or invalid API key")
    return scope


def is_admin(request: Request) -> bool:
    scope = scope_of(request)
    return scope is not None and scope.admin


def check_question(s: ServerState, question: str, context: str | None) -> None:
    """Size limits, before anything is planned or queued."""
    if len(question) > s.limits.max_question_chars:
        raise ApiError(413, f"question longer than {s.limits.max_question_chars} characters", code="question_too_long")
    if context and len(context) > s.limits.max_context_chars:
        raise ApiError(
            413,
            f"context longer than {s.limits.max_context_chars} characters (this server's limit)",
            code="context_length_exceeded",
        )


def _checked(request: Request, questions: list[dict]) -> tuple[list[dict], dict[int, float]]:
    """The questions with their adapters named (`auto` routed among the key's adapters) and
    every adapter and collection they reach checked against the key's scope."""
    s, scope = state(request), key_scope(request)
    out: list[dict] = []
    routed: dict[int, float] = {}
    for i, q in enumerate(questions):
        check_question(s, q["question"], q.get("context"))
        name = s.access.adapter(scope, q.get("adapter"))
        if name == AUTO:
            name, routed[i] = s.access.route(scope, q["question"], q.get("context"))
        s.access.reading(scope, name, q.get("collection"), q.get("context"))
        out.append({**q, "adapter": name})
    return out, routed


async def ask(request: Request, questions: list[dict]) -> list[Answer]:
    """Answers from the shared batcher for [{question, context?, adapter?, collection?,
    max_new_tokens?}], within the key's scope; the adapter that answered is noted on the
    request for the metrics."""
    s = state(request)
    if len(questions) > s.limits.max_batch_items:
        raise ApiError(413, f"more than {s.limits.max_batch_items} questions in one request", code="too_many_questions")
    request.state.adapter = questions[0].get("adapter") or s.answerer.default_adapter()  # labels: see adapter_label
    try:
        questions, routed = _checked(request, questions)
        async with s.adapter_cache.hold({q["adapter"] for q in questions}, s.limits.request_timeout_s):
            answers = await s.batcher.submit(questions, request.state.request_id, disconnected=request.is_disconnected)
    except LoraqaError as exc:  # out of scope, bad input found while planning, limits, deadline, an adapter gone
        raise ApiError.of(exc, request) from None
    except ClientGone:
        raise ApiError(499, "the client closed the request") from None
    for i, score in routed.items():
        answers[i].route_score = score
    used = {a.adapter for a in answers}
    request.state.adapter = used.pop() if len(used) == 1 else "mixed"
    return answers
