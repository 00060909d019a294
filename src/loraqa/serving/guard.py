"""What every HTTP request passes before a route sees it, in one ASGI middleware.

In order: a request id (sent back as X-Request-ID, written in every log line about the
request); the Host header, against the names the server answers to (a web page that rebinds its
own domain to 127.0.0.1 sends its own domain: refused); the key, from the headers alone, so an
unauthenticated body is never read, and its scope (serving/scopes.py) noted on the request for the
routes to check; a JSON content type on every POST (a cross-site form or
`text/plain` request, which a browser sends without asking, is refused with 415); the body's
size, from Content-Length and again while the body is read, chunked or not. Whatever a route
raises that nothing else handled is logged with its traceback and answered with a generic 500
naming the request id: never the exception's text. Every response is counted in the metrics
under a bounded set of labels.

Written as a plain ASGI middleware (not Starlette's BaseHTTPMiddleware, which reads the body
into memory in some paths and runs the route in another task). The body limit is here rather
than FastAPI's `max_body_size` (Starlette's RequestBodyLimitMiddleware): that one answers 413
but keeps the connection open, so the server goes on reading, and discarding, whatever the
client still sends (measured: all of a 50 MB chunked body); every refusal here closes it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
import time
import uuid

from starlette.exceptions import HTTPException

from loraqa.serving.scopes import ANONYMOUS, KeyRing

log = logging.getLogger("loraqa.server")

OPEN_PATHS = {"/health", "/", "/docs", "/docs/oauth2-redirect", "/openapi.json"}
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARD = ("0.0.0.0", "::", "")
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


# ---------------------------------------------------------------- keys


def needed_role(method: str, path: str) -> str | None:
    """None: open (health, docs, the demo page, CORS preflights); 'admin': changing the loaded
    adapters; else 'api'."""
    if path in OPEN_PATHS or method == "OPTIONS":
        return None
    if (path.rstrip("/") == "/v1/adapters" and method == "POST") or (
        path.startswith("/v1/adapters/") and method == "DELETE"
    ):
        return "admin"
    return "api"


# ---------------------------------------------------------------- hosts


def allowed_hosts(bind: str, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The Host names a server bound to `bind` answers to: the bind address, the loopback names
    for a loopback or wildcard bind, this machine's name and addresses for a wildcard bind, and
    every --allowed-host."""
    hosts = [bind] if bind not in WILDCARD else []
    if bind in WILDCARD or bind in LOOPBACK_NAMES:
        hosts += LOOPBACK_NAMES
    if bind in WILDCARD:
        name = socket.gethostname()
        hosts.append(name)
        try:
            hosts += [str(info[4][0]) for info in socket.getaddrinfo(name, None)]
        except OSError:
            pass
    hosts += [h.strip().lower() for h in extra if h.strip()]
    return list(dict.fromkeys(h.lower() for h in hosts))


def host_name(header: str) -> str:
    """'Example.org:8000' -> 'example.org'; '[::1]:8000' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    name, _, port = header.rpartition(":")
    if name and port.isdigit():
        try:
            ipaddress.IPv6Address(header)
            return header  # a bare IPv6 address, whose last group looks like a port
        except ValueError:
            return name
    return header


# ---------------------------------------------------------------- the middleware


class BodyTooLarge(HTTPException):
    """Raised from the body reader once a body passes the limit; an HTTPException so that FastAPI's
    body parsing passes it on and the app's handler answers 413 (closing the connection)."""

    def __init__(self):
        super().__init__(413, "request body too large")


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _is_json(content_type: str) -> bool:
    main = content_type.split(";", 1)[0].strip().lower()
    return main == "application/json" or (main.startswith("application/") and main.endswith("+json"))


class RequestGuard:
    def __init__(self, app, keys: KeyRing, hosts: list[str], max_body: int, render_error, observe, adapter_label):
        """render_error(path, status, message, code) -> (body dict); observe(route, adapter,
        status, seconds, key) counts the response; adapter_label(name) keeps metric labels bounded."""
        self.app, self.keys, self.hosts, self.max_body = app, keys, set(hosts), max_body
        self.render_error, self.observe, self.adapter_label = render_error, observe, adapter_label

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        headers = _headers(scope)
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:16]
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = {"code": 500, "started": False}
        method, path = scope["method"], scope["path"]

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        async def refuse(code: int, message: str, error_code: str | None = None, extra_headers=()):
            body = json.dumps(self.render_error(path, code, message, error_code)).encode()
            # closed after the answer: otherwise the server would read on whatever body is still coming
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": code,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"connection", b"close"),
                        (b"content-length", str(len(body)).encode()),
                        *extra_headers,
                    ],
                }
            )
            await send_with_id({"type": "http.response.body", "body": body})

        received = 0

        async def receive_within_limit():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge()
            return message

        try:
            problem = self._check(method, path, headers, state)
            if problem is not None:
                await refuse(*problem)
            else:
                await self.app(scope, receive_within_limit, send_with_id)
        except BodyTooLarge:
            if not status["started"]:
                await refuse(413, f"request body over {self.max_body} bytes", "request_too_large")
        except Exception:  # the last line of defence: log it, answer without its text
            log.exception(f"request {request_id} {method} {path} failed")
            if not status["started"]:
                await refuse(500, f"internal error; the server logged it as request {request_id}", "internal_error")
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            scope = state.get("scope")
            self.observe(
                label,
                self.adapter_label(state.get("adapter")),
                status["code"],
                time.perf_counter() - start,
                scope.name if scope is not None else ANONYMOUS,
            )

    def _check(self, method: str, path: str, headers: dict[str, str], state: dict):
        """(status, message, code, headers) of the first rule the request breaks, or None. The
        key's scope goes into state["scope"] (None: no valid key), also on the open routes,
        which show more to a key than to nobody."""
        host = host_name(headers.get("host", ""))
        if host not in self.hosts:
            log.warning(
                f"refused a request for host '{host[:100]}' (not one of {', '.join(sorted(self.hosts))}; "
                "start the server with --allowed-host NAME to answer to it)"
            )
            return 400, f"this server does not answer to host '{host[:100]}'", "invalid_host"
        role = needed_role(method, path)
        scope = state["scope"] = self.keys.identify(headers.get("authorization", ""))
        if role == "admin" and not self.keys.has_admin:
            return 403, "loading and unloading adapters is off: the server was started without an admin key", None
        if role is not None and self.keys.enabled:
            if scope is None or (role == "admin" and not scope.admin):
                what = "the admin key" if role == "admin" else "the API key"
                return (
                    401,
                    f"missing or wrong key: send 'Authorization: Bearer <key>' with {what}",
                    "invalid_api_key",
                    [(b"www-authenticate", b"Bearer")],
                )
        if method in ("POST", "PUT", "PATCH") and not _is_json(headers.get("content-type", "")):
            return 415, "send the body as JSON (Content-Type: application/json)", "unsupported_media_type"
        length = headers.get("content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > self.max_body):
            return 413, f"request body over {self.max_body} bytes", "request_too_large"
        return None
