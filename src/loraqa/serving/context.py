"""What every route shares: the server's state, the API-key rule, errors, and asking the batcher.

Errors are raised as ApiError (a status, a message, an optional machine-readable code and the
offending parameter); the app renders them as `{"detail": ...}` on loraqa's own routes and as
OpenAI's `{"error": {"message", "type", "code", "param"}}` on the OpenAI-compatible ones, so each
kind of client gets the shape it parses. The status always comes from the error's type.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request

from loraqa.errors import LoraqaError
from loraqa.inference.answerer import AUTO, Answerer
from loraqa.inference.batching import Batcher
from loraqa.inference.reading import Answer
from loraqa.serving.metrics import ServerMetrics

MAX_QUESTION_CHARS = 1_000


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.headers = status, message, code, param, headers


@dataclass
class ServerState:
    answerer: Answerer
    batcher: Batcher
    metrics: ServerMetrics
    api_key: str | None
    max_context_chars: int


def state(request: Request) -> ServerState:
    return request.app.state.loraqa


def check_key(request: Request) -> None:
    """With --api-key, every API route needs 'Authorization: Bearer KEY'."""
    api_key = state(request).api_key
    if api_key is None:
        return
    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(token.encode(), api_key.encode()):
        raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", code="invalid_api_key",
                       headers={"WWW-Authenticate": "Bearer"})


def require_admin(request: Request) -> None:
    if state(request).api_key is None:
        raise ApiError(403, "loading and unloading adapters needs an API key: restart with --api-key KEY")
    check_key(request)


def check_question(s: ServerState, question: str, context: str | None, adapter: str | None) -> None:
    """Size limits and a known adapter name, before anything is queued."""
    if len(question) > MAX_QUESTION_CHARS:
        raise ApiError(413, f"question longer than {MAX_QUESTION_CHARS} characters", code="question_too_long")
    if context and len(context) > s.max_context_chars:
        raise ApiError(413, f"context longer than {s.max_context_chars} characters (the server's --max-context-chars)",
                       code="context_length_exceeded")
    name = adapter or s.answerer.default_adapter()
    if name != AUTO and name not in s.answerer.names:
        raise ApiError(404, f"unknown adapter '{name}'; loaded: {', '.join(s.answerer.names + [AUTO])}",
                       code="model_not_found")


async def ask(request: Request, questions: list[dict]) -> list[Answer]:
    """Answers from the shared batcher for [{question, context?, adapter?, max_new_tokens?}];
    the adapter that answered is noted on the request for the metrics."""
    s = state(request)
    request.state.adapter = questions[0].get("adapter") or s.answerer.default_adapter()
    for q in questions:
        check_question(s, q["question"], q.get("context"), q.get("adapter"))
    try:
        answers = await s.batcher.submit(questions)
    except LoraqaError as exc:  # bad input found while planning, or an adapter unloaded while waiting
        raise ApiError(exc.http_status, str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - report, keep serving
        raise ApiError(500, f"answering failed: {type(exc).__name__}: {str(exc)[:200]}") from None
    used = {a.adapter for a in answers}
    request.state.adapter = used.pop() if len(used) == 1 else "mixed"
    return answers


def known_models(s: ServerState) -> list[str]:
    """What a client may name as `model` / `adapter`: the adapters, `base` and `auto`."""
    return s.answerer.names + [AUTO]
