"""Keys with scopes, through the clients their users have: plain HTTP, the official `openai`
client and the MCP SDK's client over HTTP. What a user would see go wrong without them: one
tenant's key reading another tenant's documents, or learning their adapters' and collections'
names, or the server's folders, from a listing or an error."""

from __future__ import annotations

import asyncio
import json
import shutil

import httpx
import openai
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from helpers import SQUAD_V1, live_server, run_cli

SCI, ALL, ADMIN = "key-sci", "key-all", "key-admin"


@pytest.fixture(scope="module")
def world(tmp_path_factory, domain_adapters):
    """A store with three collections: 'fixture' (bound to the science adapter), 'shared'
    (exposed), 'private' (neither); a keys file: sci (science + fixture), all (everything),
    admin; an adapter root holding one damaged adapter."""
    from loraqa.serving.scopes import digest

    tmp = tmp_path_factory.mktemp("scopes")
    store = tmp / "store"
    (tmp / "shared.md").write_text("# Canteen\n\nThe canteen serves soup on Fridays.\n")
    (tmp / "private.md").write_text("# Salaries\n\nThe director earns 240,000 a year.\n")
    for name, path in (("fixture", SQUAD_V1), ("shared", tmp / "shared.md"), ("private", tmp / "private.md")):
        assert run_cli("collection", "add", name, str(path), "--store", str(store)).exit_code == 0
    keys = tmp / "keys.yaml"
    keys.write_text(
        f"- {{name: sci, sha256: {digest(SCI)}, adapters: [science], collections: [fixture]}}\n"
        f"- {{name: all, sha256: {digest(ALL)}, adapters: ['*'], collections: ['*']}}\n"
        f"- {{name: boss, sha256: {digest(ADMIN)}, adapters: ['*'], collections: ['*'], admin: true}}\n"
    )
    root = tmp / "root"
    root.mkdir()
    broken = root / "broken"
    shutil.copytree(domain_adapters["runs"]["places"] / "adapter", broken)
    (broken / "loraqa_calibration.json").write_text("{not json")
    return {
        "store": store,
        "keys": keys,
        "root": root,
        "runs": domain_adapters["runs"],
        "rows": domain_adapters["rows"],
    }


@pytest.fixture(scope="module")
def answerer(world):
    from loraqa.inference.answerer import Answerer
    from loraqa.inference.library import CollectionSettings

    return Answerer(
        {n: str(p) for n, p in world["runs"].items()},
        dtype="fp32",
        collections=CollectionSettings(world["store"], {"science": "fixture"}),
    )


@pytest.fixture(scope="module")
def server(world, answerer):
    from loraqa.serving.app import create_app
    from loraqa.serving.options import ServeOptions

    app = create_app(
        answerer,
        ServeOptions(
            keys_file=world["keys"], expose_collections=["shared"], adapter_root=world["root"], store=world["store"]
        ),
    )
    with live_server(app) as url:
        yield url


def post(server, path, body, key):
    return httpx.post(
        f"{server}{path}", json=body, timeout=60, headers={"Authorization": f"Bearer {key}"} if key else {}
    )


def get(server, path, key=None):
    return httpx.get(f"{server}{path}", timeout=60, headers={"Authorization": f"Bearer {key}"} if key else {})


def test_out_of_scope_and_missing_get_the_same_404_naming_nothing(server, world):
    row = world["rows"]["places"][0]
    ask = {"question": row["question"], "context": row["context"]}
    refused = [post(server, "/v1/answer", {**ask, "adapter": name}, SCI) for name in ("places", "base", "nope")]
    assert {r.status_code for r in refused} == {404} and len({r.text for r in refused}) == 1
    assert "places" not in refused[0].text and "science" not in refused[0].text
    assert post(server, "/v1/answer", {**ask, "adapter": "places"}, ALL).json()["adapter"] == "places"
    assert post(server, "/v1/answer", {**ask, "adapter": "base"}, ALL).status_code == 200
    searches = [
        post(server, "/v1/search", {"query": "salary director", "collection": c}, key)
        for c, key in (("private", SCI), ("private", ALL), ("shared", SCI), ("nowhere", ALL))
    ]
    assert {r.status_code for r in searches} == {404} and len({r.text for r in searches}) == 1, searches[0].text
    assert "private" not in searches[0].text and "store" not in searches[0].text
    found = post(server, "/v1/search", {"query": "soup canteen", "collection": "shared"}, ALL)
    assert found.status_code == 200 and found.json()["results"][0]["title"] == "Canteen"
    # answering without a passage reads the adapter's collection only when the scope names it too
    no_passage = {"question": row["question"], "adapter": "science", "collection": "private"}
    assert post(server, "/v1/answer", no_passage, ALL).text == searches[0].text


def test_listings_and_health_show_only_the_keys_scope(server):
    assert get(server, "/health").json() == {"status": "ok"}  # no key: the status only
    assert get(server, "/health", "wrong").json() == {"status": "ok"}
    assert get(server, "/health", SCI).json()["models"] == ["science", "auto"]
    assert [m["id"] for m in get(server, "/v1/models", SCI).json()["data"]] == ["science", "auto"]
    listed = get(server, "/v1/adapters", SCI).json()
    assert [a["name"] for a in listed["adapters"]] == ["science"] and listed["default"] == "science"
    assert listed["base_model"] is None and "path" not in listed["adapters"][0]
    everyone = [m["id"] for m in get(server, "/v1/models", ALL).json()["data"]]
    assert everyone == ["science", "places", "base", "auto"]  # the damaged root adapter is listed by nobody


def test_auto_routes_only_among_the_keys_adapters(server, world):
    row = world["rows"]["places"][0]  # a places question: auto picks places for a key that has it
    ask = {"question": row["question"], "context": row["context"], "adapter": "auto"}
    assert post(server, "/v1/answer", ask, ALL).json()["adapter"] == "places"
    assert post(server, "/v1/answer", ask, SCI).json()["adapter"] == "science"


def test_no_server_path_reaches_a_key_that_is_not_an_admins(server, world, answerer):
    replies = [get(server, path, key).text for key in (SCI, ALL) for path in ("/v1/models", "/v1/adapters", "/health")]
    broken = post(server, "/v1/answer", {"question": "Where?", "context": "Here.", "adapter": "broken"}, ALL)
    replies.append(broken.text)
    assert broken.status_code == 400 and "<server path>" in broken.text and "is damaged" in broken.text
    secrets = [
        str(world["store"]),
        str(world["root"]),
        *(str(p) for p in world["runs"].values()),
        str(answerer.base_model),
    ]
    for reply in replies:
        assert not any(s in reply for s in secrets), reply
    # the domain description keeps what the data was, not where it lies
    domain = get(server, "/v1/models", ALL).json()["data"][0]["loraqa"]["domain"]
    assert "data.jsonl" in domain and "/" not in domain
    admin = get(server, "/v1/adapters", ADMIN).json()
    assert admin["adapters"][0]["path"].startswith(str(world["runs"]["science"]))
    assert (
        str(world["root"])
        in post(server, "/v1/answer", {"question": "W?", "context": "H.", "adapter": "broken"}, ADMIN).text
    )


def test_requests_are_counted_per_key(server, world):
    row = world["rows"]["science"][0]
    assert post(server, "/v1/answer", {"question": row["question"], "context": row["context"]}, SCI).status_code == 200
    metrics = get(server, "/metrics", ADMIN).text
    assert 'key="sci"' in metrics and 'route="/v1/answer",status="200"' in metrics
    assert "key-sci" not in metrics  # names, never keys


def test_the_openai_client_sees_the_same_scope(server, world):
    sci = openai.OpenAI(base_url=f"{server}/v1", api_key=SCI, max_retries=0)
    assert [m.id for m in sci.models.list()] == ["science", "auto"]
    messages = [{"role": "user", "content": world["rows"]["places"][0]["question"]}]
    errors = []
    for model in ("places", "nope"):
        with pytest.raises(openai.NotFoundError) as info:
            sci.chat.completions.create(model=model, messages=messages)
        errors.append((info.value.code, info.value.message))
    assert errors[0] == errors[1] and errors[0][0] == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0).models.list()


def test_search_queries_are_held_to_the_same_limits_everywhere(server, world):
    from loraqa.errors import QueryTooLong
    from loraqa.retrieval import open_store

    words = " ".join(["soup"] * 101)
    res = post(server, "/v1/search", {"query": words, "collection": "shared"}, ALL)
    assert res.status_code == 413 and "more than 100 words" in res.text
    assert post(server, "/v1/search", {"query": "x" * 1001, "collection": "shared"}, ALL).status_code == 413
    with pytest.raises(QueryTooLong):
        open_store(world["store"]).open("shared").search(words)
    cli = run_cli("collection", "search", "shared", "y" * 1001, "--store", str(world["store"]))
    assert cli.exit_code == 1 and "longer than 1,000 characters" in cli.stderr and "Traceback" not in cli.output


@pytest.fixture(scope="module")
def mcp_url(world, answerer):
    from loraqa.serving.limits import ServerLimits
    from loraqa.serving.mcp_server import build_server, http_app
    from loraqa.serving.scopes import KeyRing

    limits = ServerLimits()
    server, _ = build_server(answerer, limits=limits, exposed=["shared"], store=str(world["store"]))
    with live_server(http_app(server, "127.0.0.1", KeyRing.build(keys_file=world["keys"]), limits, [])) as url:
        yield f"{url}/mcp"


def call(url: str, key: str, tool: str, arguments: dict):
    async def go():
        async with Client(
            streamable_http_client(url, http_client=create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})),
            read_timeout_seconds=120,
        ) as c:
            return await c.call_tool(tool, arguments)

    return asyncio.run(go())


def test_mcp_tools_keep_to_the_callers_scope(mcp_url, world):
    domains = call(mcp_url, SCI, "list_domains", {}).structured_content["domains"]
    assert [d["name"] for d in domains] == ["science"]
    assert "/" not in json.dumps(domains)
    row = world["rows"]["places"][0]
    refused = [
        call(mcp_url, SCI, "answer_question", {"question": row["question"], "context": row["context"], "domain": d})
        for d in ("places", "nope")
    ]
    assert all(r.is_error for r in refused) and refused[0].content[0].text == refused[1].content[0].text
    auto = call(mcp_url, SCI, "answer_question", {"question": row["question"], "context": row["context"]})
    assert not auto.is_error and auto.structured_content["domain"] == "science"
    searches = [
        call(mcp_url, key, "search_documents", {"query": "director salary", "collection": c})
        for key, c in ((SCI, "private"), (ALL, "private"), (SCI, "shared"), (ALL, "nowhere"))
    ]
    assert all(r.is_error for r in searches) and len({r.content[0].text for r in searches}) == 1
    shared = call(mcp_url, ALL, "search_documents", {"query": "soup", "collection": "shared"})
    assert not shared.is_error and shared.structured_content["passages"][0]["title"] == "Canteen"
    bound = call(mcp_url, SCI, "search_documents", {"query": "chlorophyll light", "domain": "science"})
    assert not bound.is_error and bound.structured_content["collection"] == "fixture"
    long_query = call(mcp_url, ALL, "search_documents", {"query": "soup " * 40_000, "collection": "shared"})
    assert long_query.is_error and "longer than 1,000 characters" in long_query.content[0].text
    wordy = call(mcp_url, ALL, "search_documents", {"query": "soup " * 101, "collection": "shared"})
    assert wordy.is_error and "more than 100 words" in wordy.content[0].text


def test_keys_new_prints_a_key_once_and_its_entry_works(tmp_path):
    from loraqa.serving.scopes import KeyRing

    keys = tmp_path / "keys.yaml"
    res = run_cli("keys", "new", "tutor", "--adapters", "lit*", "--collections", "stories", "--append", str(keys))
    assert res.exit_code == 0, res.output
    key = res.stdout.strip()
    assert key.startswith("lqa_") and key not in keys.read_text()
    scope = KeyRing.build(keys_file=keys).identify(f"Bearer {key}")
    assert scope.name == "tutor" and scope.may_use("literature") and not scope.may_use("clinical")
    assert scope.may_read("stories") and not scope.admin
    again = run_cli("keys", "new", "tutor", "--adapters", "x", "--append", str(keys))
    assert again.exit_code == 2 and "already has a key named 'tutor'" in again.stderr


@pytest.mark.parametrize(
    "content,message",
    [
        ("name: x", "must be a list of entries"),
        ("- {name: a, sha256: abc}", "'sha256' must be the 64 hex digits"),
        ("- {name: a, sha256: " + "a" * 64 + ", adapters: 5}", "'adapters' must be a list"),
        ("- {name: a, sha256: " + "a" * 64 + ", role: admin}", "unknown field 'role'"),
        ("- {name: a, sha256: " + "a" * 64 + "}\n- {name: a, sha256: " + "b" * 64 + "}", "two keys are named 'a'"),
        ("[" * 5000, "is not YAML"),
    ],
)
def test_a_bad_keys_file_is_one_line_before_anything_loads(tmp_path, content, message):
    keys = tmp_path / "keys.yaml"
    keys.write_text(content)
    res = run_cli("serve", "--keys", str(keys), "--model", str(tmp_path / "no-model"))
    assert res.exit_code == 2 and message in res.stderr and "Traceback" not in res.output, res.output
