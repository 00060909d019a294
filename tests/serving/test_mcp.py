"""`loraqa mcp` through the MCP SDK's own client over stdio, as an MCP host would run it."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from mcp import Client, StdioServerParameters


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def server_params(domain_adapters):
    args = ["-m", "loraqa", "mcp", "--describe", "places=Cities and rivers of the world."]
    for name, path in domain_adapters["runs"].items():
        args += ["-a", f"{name}={path}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return StdioServerParameters(command=sys.executable, args=args, env=env)


def test_tools_answer_and_list_domains_over_stdio(server_params, domain_adapters):
    science = domain_adapters["rows"]["science"][0]
    places = domain_adapters["rows"]["places"][1]

    async def session():
        async with Client(server_params, read_timeout_seconds=120) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            domains = await client.call_tool("list_domains", {})
            routed = await client.call_tool(
                "answer_question", {"question": science["question"], "context": science["context"]}
            )
            chosen = await client.call_tool(
                "answer_question", {"question": places["question"], "context": places["context"], "domain": "places"}
            )
            empty = await client.call_tool("answer_question", {"question": "Q?", "context": "   "})
            return tools, domains, routed, chosen, empty

    tools, domains, routed, chosen, empty = run(session())
    assert set(tools) == {"answer_question", "list_domains", "search_documents"}
    assert set(tools["answer_question"].input_schema["properties"]) == {"question", "context", "domain"}

    listed = {d["name"]: d["description"] for d in domains.structured_content["domains"]}
    assert list(listed) == ["science", "places", "base"]
    assert "questions from" in listed["science"] and "data.jsonl" in listed["science"]  # from its training
    assert listed["places"] == "Cities and rivers of the world."  # --describe overrides

    got = routed.structured_content
    assert not routed.is_error and got["domain"] == "science" and got["answer"] == science["answers"]["text"][0]
    assert got["no_answer"] is False and science["context"][got["start"] : got["end"]] == got["answer"]
    assert got["score"] < 0 and 0 < got["route_score"] <= 1
    assert chosen.structured_content["domain"] == "places"
    assert chosen.structured_content["answer"] == places["answers"]["text"][0]
    assert empty.is_error and "empty" in empty.content[0].text
