"""`loraqa mcp`: the adapters as Model Context Protocol tools, on the official `mcp` SDK (MCPServer).

Tools:
- answer_question(question, context?, domain?): the answer with its evidence. With no domain
  the adapter is chosen by its training domain (`auto`); `base` means no adapter.
- list_domains(): each adapter with a description from its training (data source, number of
  training questions, run name), or the one given with --describe NAME="...".

stdio by default (an MCP host starts `loraqa mcp ...` itself); --http PORT serves streamable
HTTP at /mcp. Answering runs on a worker thread so the server keeps reading its transport.
"""

from __future__ import annotations

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from loraqa.errors import LoraqaError
from loraqa.inference.answerer import AUTO, BASE, Answerer


class Answered(BaseModel):
    answer: str = Field(description="The answer; empty when no_answer is true.")
    domain: str = Field(description="The adapter (domain) that answered.")
    score: float | None = Field(description="Length-normalised log-probability of the answer: higher is surer (0 is certain).")
    no_answer: bool = Field(description="True when the document does not answer the question (or not confidently enough).")
    start: int | None = Field(description="Character offset of the answer in the context, when quoted verbatim.")
    end: int | None = Field(description="Character offset just after the answer.")
    route_score: float | None = Field(None, description="How well the chosen domain matched, when chosen automatically (0-1).")


class Domain(BaseModel):
    name: str
    description: str


class Domains(BaseModel):
    domains: list[Domain]


def describe(answerer: Answerer, name: str, overrides: dict[str, str]) -> str:
    if name in overrides:
        return overrides[name]
    profile = answerer.profiles.get(name)
    return f"Question answering adapter {profile.describe()}." if profile else f"Question answering adapter '{name}'."


def build_server(answerer: Answerer, descriptions: dict[str, str] | None = None) -> MCPServer:
    descriptions = dict(descriptions or {})
    server = MCPServer("loraqa", instructions="Answer questions from documents with domain-specific LoRA adapters. "
                                               "Call list_domains to see them; leave domain out to choose automatically.")

    @server.tool(description="Answer a question from a document (context) with a domain adapter. The answer comes "
                             "with a confidence score, a no_answer flag and the answer's character offsets in the "
                             "document. Leave `domain` out to pick the adapter automatically (list_domains shows them).")
    async def answer_question(question: str, context: str | None = None, domain: str | None = None) -> Answered:
        if not question.strip():
            raise ToolError("the question is empty")
        request = {"question": question, "context": context, "adapter": domain or AUTO}
        try:
            [a] = await anyio.to_thread.run_sync(answerer.answer, [request])
        except LoraqaError as exc:
            raise ToolError(str(exc)) from None
        return Answered(answer=a.answer, domain=a.adapter, score=a.score, no_answer=a.no_answer, start=a.start,
                        end=a.end, route_score=a.route_score)

    @server.tool(description="The question-answering domains (adapters) available, with what each was trained on.")
    def list_domains() -> Domains:
        return Domains(domains=[Domain(name=n, description="The base model without an adapter." if n == BASE
                                       else describe(answerer, n, descriptions)) for n in answerer.names])

    return server


def run_mcp(adapters: dict[str, str], base_model: str | None, descriptions: dict[str, str], http_port: int | None,
            host: str = "127.0.0.1", allow_pickle: bool = False, engine: str = "pytorch") -> None:
    unknown = [n for n in descriptions if n not in adapters]
    if unknown:
        raise LoraqaError(f"--describe names {unknown[0]}, which is not one of the adapters: {', '.join(adapters)}")
    answerer = Answerer(adapters, base_model=base_model, allow_pickle=allow_pickle, engine=engine)
    server = build_server(answerer, descriptions)
    if http_port is None:
        server.run("stdio")
    else:
        server.run("streamable-http", host=host, port=http_port)
