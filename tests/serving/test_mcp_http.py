"""`loraqa mcp --http` through the MCP SDK's own streamable-HTTP client: the HTTP server's key
rule, DNS-rebinding protection on every host, its limits, and long documents read in batches that
interleave with other calls."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from helpers import live_server

KEY = "mcp-key"


@pytest.fixture(scope="module")
def mcp_url(answerer):
    from loraqa.serving.limits import ServerLimits
    from loraqa.serving.mcp_server import build_server, http_app
    from loraqa.serving.scopes import KeyRing

    limits = ServerLimits(max_context_chars=200_000)
    server, _ = build_server(answerer, limits=limits)
    with live_server(http_app(server, "127.0.0.1", KeyRing.build(KEY), limits, ["qa.internal"])) as url:
        yield f"{url}/mcp"


def client(url: str, key: str | None = KEY) -> Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return Client(
        streamable_http_client(url, http_client=create_mcp_http_client(headers=headers)), read_timeout_seconds=120
    )


def test_the_key_is_required(mcp_url, two_adapters):
    row = two_adapters["rows"][0]

    async def with_key():
        async with client(mcp_url) as c:
            return await c.call_tool(
                "answer_question", {"question": row["question"], "context": row["context"], "domain": "answers"}
            )

    got = asyncio.run(with_key())
    assert not got.is_error and got.structured_content["answer"] == row["answers"]["text"][0]
    for key in (None, "wrong"):
        res = httpx.post(
            mcp_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={
                "Accept": "application/json, text/event-stream",
                **({"Authorization": f"Bearer {key}"} if key else {}),
            },
        )
        assert res.status_code == 401


@pytest.mark.parametrize("host,allowed", [("evil.example", False), ("127.0.0.1", True), ("qa.internal", True)])
def test_dns_rebinding_protection_checks_the_host(mcp_url, host, allowed):
    port = mcp_url.split(":")[2].split("/")[0]
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    res = httpx.post(
        mcp_url,
        json=init,
        headers={
            "Host": f"{host}:{port}",
            "Authorization": f"Bearer {KEY}",
            "Accept": "application/json, text/event-stream",
        },
    )
    assert (res.status_code == 200) == allowed, (res.status_code, res.text[:200])


def test_the_servers_limits_hold(mcp_url):
    async def calls():
        async with client(mcp_url) as c:
            long_question = await c.call_tool("answer_question", {"question": "why " * 300, "context": "Text."})
            huge_context = await c.call_tool("answer_question", {"question": "Q?", "context": "x" * 200_001})
            return long_question, huge_context

    long_question, huge_context = asyncio.run(calls())
    assert long_question.is_error and "longer than 1000" in long_question.content[0].text
    assert huge_context.is_error and "200000" in huge_context.content[0].text


def test_a_long_document_does_not_hold_a_short_call_back(mcp_url, two_adapters, squad_rows):
    """Two agents (two sessions): the short call is answered while the long document is still read."""
    row = two_adapters["rows"][0]
    document = (" ".join(r["context"] for r in squad_rows) * 60)[:150_000]  # ~900 windows, within the limit

    async def ask(name, context, done):
        async with client(mcp_url) as c:
            got = await c.call_tool(
                "answer_question", {"question": row["question"], "context": context, "domain": "answers"}
            )
        assert not got.is_error, got.content
        done[name] = time.perf_counter()

    async def both():
        done = {}
        long_call = asyncio.create_task(ask("long", document, done))
        await asyncio.sleep(0.5)  # its windows are being read
        await ask("short", row["context"], done)
        await long_call
        return done

    done = asyncio.run(both())
    assert done["short"] < done["long"]
