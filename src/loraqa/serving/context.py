"""What every route shares: the server's state, errors, and asking the batcher.

Errors are raised as ApiError (a status, a message, an optional machine-readable code and the
offending parameter); the app renders them as `{"detail": ...}` on loraqa's own routes and as
OpenAI's `{"error": {"message", "type", "code", "param"}}` on the OpenAI-compatible ones, so each
kind of client gets the shape it parses. The status always comes from the error's type. An
error that is not a LoraqaError is the server's own fault: it propagates to the request guard,
which logs it and answers a generic 500.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import Request

from loraqa.errors import AdapterNotFound, LoraqaError
from loraqa.inference.answerer import AUTO, Answerer
from loraqa.inference.reading import Answer
from loraqa.serving.batching import Batcher, ClientGone
from loraqa.serving.guard import Keys
from loraqa.serving.limits import ServerLimits
from loraqa.serving.metrics import ServerMetrics


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.headers = status, message, code, param, headers

    @classmethod
    def of(cls, exc: LoraqaError, code: str | None = None, param: str | None = None) -> "ApiError":
        retry = getattr(exc, "retry_after", None)
        return cls(exc.http_status, str(exc), code, param, {"Retry-After": str(retry)} if retry else None)


@dataclass
class ServerState:
    answerer: Answerer
    batcher: Batcher
    metrics: ServerMetrics
    keys: Keys
    limits: ServerLimits
    adapter_root: Path | None  # where POST /v1/adapters may load from; None: hot loading is off
    library: object = None  # AdapterLibrary: the root's adapters loaded on demand (None: off)


def state(request: Request) -> ServerState:
    return request.app.state.loraqa


def is_admin(request: Request) -> bool:
    s = state(request)
    return s.keys.admin is not None and s.keys.role(request.headers.get("authorization", "")) == "admin"


def check_question(s: ServerState, question: str, context: str | None) -> None:
    """Size limits, before anything is planned or queued."""
    if len(question) > s.limits.max_question_chars:
        raise ApiError(413, f"question longer than {s.limits.max_question_chars} characters", code="question_too_long")
    if context and len(context) > s.limits.max_context_chars:
        raise ApiError(413, f"context longer than {s.limits.max_context_chars} characters (this server's limit)",
                       code="context_length_exceeded")


async def ask(request: Request, questions: list[dict]) -> list[Answer]:
    """Answers from the shared batcher for [{question, context?, adapter?, max_new_tokens?}];
    the adapter that answered is noted on the request for the metrics."""
    s = state(request)
    if len(questions) > s.limits.max_batch_items:
        raise ApiError(413, f"more than {s.limits.max_batch_items} questions in one request", code="too_many_questions")
    request.state.adapter = questions[0].get("adapter") or s.answerer.default_adapter()
    for q in questions:
        check_question(s, q["question"], q.get("context"))
    routed: dict[int, float] = {}
    if s.library is not None:  # `auto` chooses among every adapter of the root, loaded or not
        questions = list(questions)
        for i, q in enumerate(questions):
            if q.get("adapter") == AUTO:
                choice = s.library.route(q["question"], q.get("context"))
                if choice is not None:
                    questions[i], routed[i] = {**q, "adapter": choice[0]}, choice[1]
    try:
        if s.library is not None:
            names = {q.get("adapter") or s.answerer.default_adapter() for q in questions}
            async with s.library.hold(names, s.limits.request_timeout_s):
                answers = await s.batcher.submit(questions, request.state.request_id,
                                                 disconnected=request.is_disconnected)
        else:
            answers = await s.batcher.submit(questions, request.state.request_id, disconnected=request.is_disconnected)
    except LoraqaError as exc:  # bad input found while planning, limits, deadline, an adapter gone
        raise ApiError.of(exc, "model_not_found" if isinstance(exc, AdapterNotFound) else None) from None
    except ClientGone:
        raise ApiError(499, "the client closed the request") from None
    for i, score in routed.items():
        answers[i].route_score = score
    used = {a.adapter for a in answers}
    request.state.adapter = used.pop() if len(used) == 1 else "mixed"
    return answers


def known_models(s: ServerState) -> list[str]:
    """What a client may name as `model` / `adapter`: the adapters (with a library, every one of
    the root), `base` and `auto`."""
    return adapter_names(s) + [AUTO]


def profile_of(s: ServerState, name: str):
    """The adapter's domain profile, loaded or only in the library's root (None: it has none)."""
    adapter = s.answerer.adapter(name)
    if adapter is not None:
        return adapter.profile
    entry = s.library.catalogue.get(name) if s.library is not None else None
    return entry.profile if entry is not None else None


def adapter_names(s: ServerState) -> list[str]:
    """The adapters and `base`: with a library also those of the root not loaded now."""
    names = s.answerer.names
    if s.library is None:
        return names
    return s.library.names + [n for n in names if n not in s.library.names]
