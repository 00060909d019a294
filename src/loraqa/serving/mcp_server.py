"""`loraqa mcp`: the adapters as Model Context Protocol tools, on the official `mcp` SDK (MCPServer).

Tools:
- answer_question(question, context?, domain?): the answer with its evidence. With no domain
  the adapter is chosen by its training domain (`auto`); `base` means no adapter. With no context
  the domain's collection is searched and its best passages read; the answer then carries
  citations (document, page, offsets, quote).
- search_documents(query, domain?, collection?, k?): the passages that best match, in a named
  collection the server exposes, or else in the domain's collection.
- list_domains(): each adapter with a description from its training (data source, number of
  training questions, run name), or the one given as a description when the server started.

Over HTTP with keys (`--keys FILE`, `--api-key`), every tool keeps to the calling key's scope as
the HTTP server's routes do (serving/access.py): only its adapters (`auto` chooses among them),
only exposed collections its scope names, the same error for what is out of scope and what does
not exist, no server-side path unless the key is an admin's.

stdio by default (an MCP host starts `loraqa mcp ...` itself); over streamable HTTP (at /mcp)
the same rules as the HTTP server hold: a key in the Authorization header when one is set, the
SDK's DNS-rebinding protection on every host (Host and Origin checked against the names the
server answers to), the same body, question and document limits, and a deadline. Questions go
through the same batcher as the HTTP server's: a long document is read in batches of windows
that interleave with other calls, never holding the model for a whole call.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Annotated

from loraqa.errors import LoraqaError, UsageError, option
from loraqa.optional import require_extra

_mcp = require_extra("mcp", "loraqa mcp")

# the imports below come after the check that names the pip extra (E402 allowed in pyproject.toml)
import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import BaseModel, Field

from loraqa.inference.answerer import AUTO, BASE, Answerer
from loraqa.retrieval.filters import Filter
from loraqa.serving.access import Access
from loraqa.serving.adapter_cache import AdapterCache
from loraqa.serving.batching import Batcher
from loraqa.serving.guard import allowed_hosts
from loraqa.serving.limits import ServerLimits
from loraqa.serving.memory import bound_kernel_cache
from loraqa.serving.options import ServedModels, ServeOptions
from loraqa.serving.remote_batcher import RemoteBatcher
from loraqa.serving.scopes import OPEN, KeyRing, Scope
from loraqa.serving.startup import say_ready

log = logging.getLogger("loraqa.server")


class Answered(BaseModel):
    answer: str = Field(description="The answer; empty when no_answer is true.")
    domain: str = Field(description="The adapter (domain) that answered.")
    score: float | None = Field(
        description="Length-normalised log-probability of the answer: higher is surer (0 is certain)."
    )
    no_answer: bool = Field(
        description="True when the document does not answer the question (or not confidently enough)."
    )
    start: int | None = Field(description="Character offset of the answer in the context, when quoted verbatim.")
    end: int | None = Field(description="Character offset just after the answer.")
    route_score: float | None = Field(
        None, description="How well the chosen domain matched, when chosen automatically (0-1)."
    )
    citations: list[dict] | None = Field(
        None,
        description="Without a context: where the answer was read (document, "
        "title, source, page, start, end, passage_score, quote), "
        "then the other passages read.",
    )


class Passage(BaseModel):
    document: str = Field(description="The document's id in its collection.")
    title: str
    source: str
    page: int | None
    start: int = Field(description="Character offset of the passage in the document's text.")
    end: int
    score: float = Field(description="How well it matches the query (BM25): higher is better.")
    text: str


class Passages(BaseModel):
    collection: str
    passages: list[Passage]


class Domain(BaseModel):
    name: str
    description: str


class Domains(BaseModel):
    domains: list[Domain]


def describe(access: Access, name: str, overrides: dict[str, str], scope: Scope) -> str:
    adapter = access.answerer.adapter(name)
    documents = (
        f" Answers questions without a context from the documents of collection '{adapter.collection}' "
        "(search_documents searches them)."
        if adapter is not None and adapter.collection and scope.may_read(adapter.collection)
        else ""
    )
    if name in overrides:
        return overrides[name] + documents
    described = access.describe(name, scope)
    if described is not None:
        return f"Question answering adapter {described}." + documents
    return f"Question answering adapter '{name}'." + documents


def scope_of(ctx: Context) -> Scope:
    """The calling key's scope, noted on the HTTP request by BearerKey; stdio: the host that
    started the server is the only client."""
    request = ctx.request_context.request if ctx is not None else None
    if request is None:
        return OPEN
    found = request.scope.get("state", {}).get("scope")
    if found is None:  # BearerKey let nothing through without a key: a transport that lost it
        raise ToolError("no key with this call")
    return found


def build_server(
    answerer: Answerer,
    descriptions: dict[str, str] | None = None,
    limits: ServerLimits | None = None,
    exposed: list[str] | tuple[str, ...] = (),
    store: str | Path | None = None,
    remote: RemoteBatcher | None = None,
) -> tuple[MCPServer, Batcher | RemoteBatcher]:
    """The MCP server over one Answerer; with `remote`, its answers come from the model
    replicas of a loraqa app on Ray (serving/ray_app.py)."""
    descriptions = dict(descriptions or {})
    limits = limits or ServerLimits()
    batcher = remote or Batcher(answerer, limits=limits)
    access = Access(answerer, AdapterCache(answerer.registry, batcher), exposed=exposed, store=store)
    server = MCPServer(
        "loraqa",
        instructions="Answer questions from documents with domain-specific LoRA adapters. "
        "Call list_domains to see them; leave domain out to choose automatically.",
    )

    def refused(exc: LoraqaError, scope: Scope) -> ToolError:
        return ToolError(access.error(exc, scope))

    @server.tool(
        description="Answer a question from a document (context) with a domain adapter. The answer comes "
        "with a confidence score, a no_answer flag and the answer's character offsets in the "
        "document. Leave `domain` out to pick the adapter automatically (list_domains shows them)."
    )
    async def answer_question(
        question: Annotated[str, Field(description="The question, in the user's words.")],
        context: Annotated[
            str | None,
            Field(
                description="The document to read the answer from (any length: it is read in windows). "
                "Left out: the answer comes from the domain's collection of documents, when it has one, with citations."
            ),
        ] = None,
        domain: Annotated[
            str | None,
            Field(description="The adapter that answers (list_domains names them). Left out: chosen by the question."),
        ] = None,
        ctx: Context = None,  # type: ignore[assignment]  # the SDK injects ctx; None only when called directly
    ) -> Answered:
        scope = scope_of(ctx)
        if not question.strip():
            raise ToolError("the question is empty")
        if len(question) > limits.max_question_chars:
            raise ToolError(f"the question is longer than {limits.max_question_chars} characters")
        if context is not None and len(context) > limits.max_context_chars:
            raise ToolError(f"the context is longer than {limits.max_context_chars} characters (this server's limit)")
        if not batcher.started:  # the first call, in the event loop the SDK runs
            await batcher.start()
        call = uuid.uuid4().hex[:16]
        try:
            name, routed = access.adapter(scope, domain or AUTO), None
            if name == AUTO:
                name, routed = access.route(scope, question, context)
            access.reading(scope, name, None, context)
            [a] = await batcher.submit([{"question": question, "context": context, "adapter": name}], call)
        except LoraqaError as exc:
            raise refused(exc, scope) from None
        except Exception:  # logged with its traceback; the client gets no internals
            log.exception(f"tool call {call} answer_question failed")
            raise ToolError(f"internal error; the server logged it as call {call}") from None
        return Answered(
            answer=a.answer,
            domain=a.adapter,
            score=a.score,
            no_answer=a.no_answer,
            start=a.start,
            end=a.end,
            route_score=routed if routed is not None else a.route_score,
            citations=a.citations,
        )

    @server.tool(
        description="Search documents: the passages that best match the query, each with its document, "
        "title, page and character offsets. Name a `collection` (list_domains says which each "
        "domain reads), or a `domain` to search its collection; leave both out to pick the "
        "domain automatically. `mode`: lexical, dense or hybrid (default: hybrid when the "
        "collection has vectors). `document` (an id) or `source` (a glob, e.g. "
        "'policies/acme*') searches within those documents."
    )
    async def search_documents(
        query: Annotated[str, Field(description="What to search for, in the user's words.")],
        domain: Annotated[str | None, Field(description="Search the collection this domain reads.")] = None,
        collection: Annotated[
            str | None, Field(description="The collection to search (list_domains says which each domain reads).")
        ] = None,
        k: Annotated[int, Field(description="How many passages, 1 to 100.")] = 5,
        mode: Annotated[
            str | None,
            Field(description="lexical, dense or hybrid; default: hybrid when the collection has vectors."),
        ] = None,
        document: Annotated[str | None, Field(description="Search within this document only (its id).")] = None,
        source: Annotated[
            str | None,
            Field(description="Search within documents whose source matches this glob, e.g. 'policies/acme*'."),
        ] = None,
        ctx: Context = None,  # type: ignore[assignment]  # the SDK injects ctx; None only when called directly
    ) -> Passages:
        scope = scope_of(ctx)
        if not query.strip():
            raise ToolError("the query is empty")
        if not 1 <= k <= 100:
            raise ToolError("k must be between 1 and 100")
        try:
            if collection is None:
                name = access.adapter(scope, domain or AUTO)
                if name == AUTO:
                    name, _ = access.route(scope, query, None)
                collection = access.bound(name)
                if collection is None:
                    raise ToolError(f"the domain '{name}' has no collection of documents; name a collection")
            access.collection(scope, collection)
            where = Filter.of({k_: v for k_, v in (("document", document), ("source", source)) if v is not None})
            hits = await anyio.to_thread.run_sync(lambda: answerer.library.search(collection, query, k, mode, where))
        except LoraqaError as exc:
            raise refused(exc, scope) from None
        passages = [Passage.model_validate(h, from_attributes=True) for h in hits]  # the fields it declares
        return Passages(collection=collection, passages=passages)

    @server.tool(description="The question-answering domains (adapters) available, with what each was trained on.")
    def list_domains(
        ctx: Context = None,  # type: ignore[assignment]  # the SDK injects ctx; None only when called directly
    ) -> Domains:
        scope = scope_of(ctx)
        return Domains(
            domains=[
                Domain(
                    name=n,
                    description="The base model without an adapter."
                    if n == BASE
                    else describe(access, n, descriptions, scope),
                )
                for n in access.adapters(scope)
            ]
        )

    return server, batcher


def transport_security(host: str, extra_hosts: list[str]) -> TransportSecuritySettings:
    """The SDK's DNS-rebinding protection, on for every bind address: the Host (and a browser's
    Origin) must be one of the names the server answers to, with any port."""
    names = allowed_hosts(host, extra_hosts)
    spelled = [f"[{h}]" if ":" in h else h for h in names]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[p for h in spelled for p in (h, f"{h}:*")],
        allowed_origins=[
            f"{scheme}://{h}{port}" for h in spelled for scheme in ("http", "https") for port in ("", ":*")
        ],
    )


class BearerKey:
    """The key rule of the HTTP server, for the MCP endpoint (ASGI middleware): a call without a
    valid key is refused before its body is read; a valid key's scope goes on the request, where
    the tools read it."""

    def __init__(self, app, keys: KeyRing):
        self.app, self.keys = app, keys

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            found = self.keys.identify(headers.get("authorization", ""))
            if found is None:
                body = json.dumps({"error": "missing or wrong key: send 'Authorization: Bearer <key>'"}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b"Bearer"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
            scope.setdefault("state", {})["scope"] = found
        await self.app(scope, receive, send)


def http_app(server: MCPServer, host: str, keys: KeyRing, limits: ServerLimits, extra_hosts: list[str]):
    app = server.streamable_http_app(
        transport_security=transport_security(host, extra_hosts), host=host, max_request_body_size=limits.max_body_bytes
    )
    return BearerKey(app, keys)


def run_mcp(
    models: ServedModels, options: ServeOptions, descriptions: dict[str, str], ray_address: str | None = None
) -> None:
    """Serve the models as MCP tools until stopped: over streamable HTTP on options.port, or over
    stdio when it is None. descriptions: adapter -> how list_domains describes it. With
    ray_address, the questions are answered by the loraqa app running on that Ray cluster (its
    adapter root must hold the adapters named here)."""
    unknown = [n for n in descriptions if n not in models.adapters]
    if unknown:
        raise UsageError(
            f"{option('describe')} names {unknown[0]}, which is not one of the adapters: {', '.join(models.adapters)}"
        )
    keys = KeyRing.build(options.api_key, None, options.keys_file)
    bound_kernel_cache()
    answerer = models.load(options)
    for name in options.expose_collections:
        answerer.library.open(name)  # an unknown collection is refused at start
    remote = None
    if ray_address:
        from loraqa.serving.ray_app import model_handle

        remote = RemoteBatcher(model_handle(ray_address), options.limits)
    server, _ = build_server(answerer, descriptions, options.limits, options.expose_collections, options.store, remote)
    say_ready(answerer, "MCP server")
    if options.port is None:
        server.run("stdio")
        return
    app = http_app(server, options.host, keys, options.limits, options.allowed_host)
    _mcp["uvicorn"].run(app, host=options.host, port=options.port, log_level="warning")
