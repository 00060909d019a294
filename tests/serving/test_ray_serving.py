"""`loraqa serve --ray`: the same API on a local Ray instance, two model replicas answering,
driven with the clients its users have (the official openai client, the MCP SDK's client through
`loraqa mcp --ray-address`, a browser) and raw HTTP for the guard. One Ray instance and one
deployment for the module: Ray takes seconds to start, so these run once in the suite (marked
`ray`: `pytest -m "not ray"` leaves them out while working on something else)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import sys
import time

import httpx
import pytest

from helpers import SQUAD_V1, run_cli

pytest.importorskip("ray", reason="pip install 'loraqa[ray]'")
pytestmark = pytest.mark.ray

KEY, SCIENCE_ONLY = "ray-key", "ray-science-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory, domain_adapters):
    """An adapter root of four (s1, s2: copies of 'science'; p1, p2: of 'places') and a keys
    file: KEY reaches everything, SCIENCE_ONLY the s adapters."""
    from loraqa.serving.scopes import digest

    tmp = tmp_path_factory.mktemp("ray")
    root = tmp / "root"
    for kind, prefix in (("science", "s"), ("places", "p")):
        for i in (1, 2):
            shutil.copytree(domain_adapters["runs"][kind] / "adapter", root / f"{prefix}{i}")
    # the collection every replica answers from: PostgreSQL where the suite has one (as a cluster
    # would), else SQLite
    store = os.environ.get("LORAQA_TEST_POSTGRES") or str(tmp / "store")
    added = run_cli("collection", "add", "rayfixture", str(SQUAD_V1), "--store", store)
    assert added.exit_code == 0, added.output
    keys = tmp / "keys.yaml"
    keys.write_text(
        f"- {{name: all, sha256: {digest(KEY)}, adapters: ['*'], collections: ['*']}}\n"
        f"- {{name: sci, sha256: {digest(SCIENCE_ONLY)}, adapters: [s1, s2], collections: []}}\n"
    )
    yield {"root": root, "keys": keys, "rows": domain_adapters["rows"], "store": store}
    if store.startswith("postgresql"):
        from loraqa.retrieval import open_store

        open_store(store).drop("rayfixture")


@pytest.fixture(scope="module")
def ray_url(world, nodrop_model_dir):
    """The app on a local Ray instance: two model replicas of at most one adapter each."""
    import ray
    from ray import serve

    from loraqa.serving.limits import ServerLimits
    from loraqa.serving.options import ServedModels, ServeOptions
    from loraqa.serving.ray_app import APP_NAME, RayOptions, build

    port = free_port()
    options = ServeOptions(
        keys_file=world["keys"],
        adapter_root=world["root"],
        store=world["store"],
        expose_collections=["rayfixture"],
        max_loaded=1,
        port=port,
        limits=ServerLimits(max_context_chars=20_000),  # bodies over 296 kB are refused
    )
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(
            build(ServedModels({}, str(nodrop_model_dir)), options, RayOptions()), name=APP_NAME, route_prefix="/"
        )
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def ask(url: str, name: str, row: dict, key: str = KEY) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/answer",
        json={"question": row["question"], "context": row["context"], "adapter": name},
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )


def loads(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    found = re.finditer(r'^loraqa_adapter_loads_total\{adapter="([^"]+)"\} (\S+)$', text, re.M)
    return {m.group(1): float(m.group(2)) for m in found}


def test_each_adapter_stays_on_the_replica_that_loaded_it(ray_url, world):
    """Two replicas of one adapter each, two adapters asked for in turn: with routing by adapter
    each loads once; a router blind to adapters would load on most requests (each replica
    holds one, so every other turn is a miss)."""
    science, places = world["rows"]["science"][0], world["rows"]["places"][0]
    before = loads(ray_url)
    got = [ask(ray_url, name, row) for _ in range(4) for name, row in (("s1", science), ("p1", places))]
    assert [r.status_code for r in got] == [200] * 8
    assert {r.json()["answer"] for r in got[0::2]} == {science["answers"]["text"][0]}
    assert {r.json()["answer"] for r in got[1::2]} == {places["answers"]["text"][0]}
    after = loads(ray_url)
    assert {n: after.get(n, 0) - before.get(n, 0) for n in ("s1", "p1")} == {"s1": 1, "p1": 1}


def test_the_openai_client_works_through_ray(ray_url, world):
    import openai

    client = openai.OpenAI(base_url=f"{ray_url}/v1", api_key=KEY, max_retries=0)
    row = world["rows"]["places"][1]
    messages = [{"role": "system", "content": row["context"]}, {"role": "user", "content": row["question"]}]
    whole = client.chat.completions.create(model="p2", messages=messages)
    assert whole.choices[0].message.content == row["answers"]["text"][0] and whole.model == "p2"
    chunks = list(client.chat.completions.create(model="p2", messages=messages, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == row["answers"]["text"][0]
    assert {m.id for m in client.models.list().data} >= {"s1", "s2", "p1", "p2", "auto"}
    routed = client.chat.completions.create(model="auto", messages=messages)  # routed in the front, then sent on
    assert routed.model.startswith("p") and routed.choices[0].message.content == row["answers"]["text"][0]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=messages)


def test_a_request_for_several_adapters_is_answered_in_its_order(ray_url, world):
    science, places = world["rows"]["science"][1], world["rows"]["places"][1]
    items = [(n, r) for n, r in (("s2", science), ("p2", places), ("s2", science), ("base", places))]
    resp = httpx.post(
        f"{ray_url}/v1/answer/batch",
        json={"requests": [{"question": r["question"], "context": r["context"], "adapter": n} for n, r in items]},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=120,
    )
    assert resp.status_code == 200, resp.text
    answers = resp.json()["answers"]
    assert [a["adapter"] for a in answers] == ["s2", "p2", "s2", "base"]
    assert [a["answer"] for a in answers[:3]] == [
        science["answers"]["text"][0],
        places["answers"]["text"][0],
        science["answers"]["text"][0],
    ]


def test_a_question_without_a_passage_is_answered_from_the_shared_store(ray_url, world):
    row = world["rows"]["science"][2]
    resp = httpx.post(
        f"{ray_url}/v1/answer",
        json={"question": row["question"], "adapter": "s2", "collection": "rayfixture"},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=120,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["answer"] == row["answers"]["text"][0] and body["citations"][0]["title"] == row["title"]


def test_the_guard_holds_on_the_ray_path(ray_url, world):
    row = world["rows"]["science"][0]
    # out of the key's scope and missing read the same
    hidden, missing = ask(ray_url, "p1", row, SCIENCE_ONLY), ask(ray_url, "zz", row, SCIENCE_ONLY)
    assert hidden.status_code == missing.status_code == 404 and hidden.json() == missing.json()
    assert ask(ray_url, "s1", row, SCIENCE_ONLY).status_code == 200
    assert ask(ray_url, "s1", row, "wrong").status_code == 401
    big = {"question": "q", "context": "x" * 400_000, "adapter": "s1"}
    too_big = httpx.post(f"{ray_url}/v1/answer", json=big, headers={"Authorization": f"Bearer {KEY}"})
    assert too_big.status_code == 413
    # a wrong key is refused before the body is read: the answer comes while the body is still owed
    port = int(ray_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"POST /v1/answer HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer wrong\r\n"
            b"Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n{"
        )
        started = time.monotonic()
        head = s.recv(200)
    assert head.startswith(b"HTTP/1.1 401") and time.monotonic() - started < 10
    # loading by hand would reach one replica only: refused with a reason
    resp = httpx.post(
        f"{ray_url}/v1/adapters", json={"name": "x", "path": "s1"}, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert resp.status_code in (401, 403, 405)


def test_the_mcp_server_answers_through_ray(ray_url, world):
    """`loraqa mcp --ray-address` in its own process: its questions reach the replicas (the
    model replica holding s1 counts them)."""
    import ray
    from mcp import Client, StdioServerParameters
    from ray import serve

    from loraqa.serving.ray_app import APP_NAME, MODEL_DEPLOYMENT

    row = world["rows"]["science"][0]
    assert ask(ray_url, "s1", row).status_code == 200  # s1 is held by a replica now
    model = serve.get_deployment_handle(MODEL_DEPLOYMENT, app_name=APP_NAME).options(multiplexed_model_id="s1")
    before = model.served.remote().result()["s1"]
    args = [
        "-m",
        "loraqa",
        "mcp",
        "-a",
        f"s1={world['root'] / 's1'}",
        "--ray-address",
        ray.get_runtime_context().gcs_address,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    async def session():
        async with Client(
            StdioServerParameters(command=sys.executable, args=args, env=env), read_timeout_seconds=120
        ) as c:
            return await c.call_tool(
                "answer_question", {"question": row["question"], "context": row["context"], "domain": "s1"}
            )

    got = asyncio.run(session())
    assert not got.is_error, got.content
    assert got.structured_content["answer"] == row["answers"]["text"][0]
    assert model.served.remote().result()["s1"] == before + 1


def test_the_demo_page_works_through_ray(ray_url, world):
    from test_demo_page import CHROMIUM, launch_args

    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium not installed")
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    row = world["rows"]["science"][1]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=launch_args)
        page = browser.new_page()
        page.goto(ray_url + "/")
        page.fill("#apikey", KEY)
        page.press("#apikey", "Tab")  # leaving the field is what makes the page list the key's adapters
        page.wait_for_selector("input[name=adapter][value=s1]")
        page.check("input[name=adapter][value=s1]")
        page.fill("#passage", row["context"])
        page.fill("#question", row["question"])
        page.click("#ask")
        try:
            result = page.wait_for_selector(".result[data-adapter=s1]", timeout=60_000)
        except PlaywrightTimeout:  # what the page said instead
            raise AssertionError(page.inner_text("#status") + " | " + page.inner_text("#results")) from None
        answer = result.query_selector(".answer").inner_text()
        browser.close()
    assert answer == row["answers"]["text"][0]
