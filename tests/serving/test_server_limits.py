"""The HTTP server against careless and hostile clients: every limit holds, one bad request never
fails another, and the server stays truthful about its health. Real HTTP clients (httpx, raw
sockets) against the running app; the model is the tiny fixture answerer."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import httpx
import pytest

from helpers import live_server, local_client

JSON = {"content-type": "application/json"}


def app_of(answerer, **options):
    """create_app with ServerLimits fields given as plain keywords."""
    import dataclasses

    from loraqa.serving.app import create_app
    from loraqa.serving.limits import ServerLimits
    from loraqa.serving.options import ServeOptions

    names = {f.name for f in dataclasses.fields(ServerLimits)}
    limits = {k: options.pop(k) for k in list(options) if k in names}
    return create_app(answerer, ServeOptions(window_ms=1, limits=ServerLimits(**limits), **options))


class HeldModel:
    """The batcher's model call, held until released: windows stay queued or in flight."""

    def __init__(self, app):
        self.batcher = app.state.batcher
        self.real = self.batcher.run_fn
        self.gate, self.calls = threading.Event(), []
        self.batcher.run_fn = self.run

    def run(self, batch):
        self.calls.append(len(batch))
        assert self.gate.wait(30), "the test never released the model"
        return self.real(batch)


async def in_app(app, scenario):
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=60) as client:
            return await scenario(client)


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024


# ---------------------------------------------------------------- bodies


def test_a_50_mb_chunked_body_is_refused_while_it_is_read(answerer):
    """No Content-Length: the limit holds as the chunks arrive; memory stays flat."""
    with live_server(app_of(answerer)) as url:
        port = int(url.rsplit(":", 1)[1])
        chunk = b"x" * 65536
        peak, before = [0.0], rss_mib()
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mib())
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(
                b"POST /v1/answer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            sent = 0
            try:
                while sent < 50 * 2**20:
                    s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sent += len(chunk)
            except OSError:
                pass  # the server stopped reading and closed: what it should do
            s.settimeout(10)
            reply = b""
            try:
                while b"\r\n\r\n" not in reply:
                    data = s.recv(4096)
                    if not data:
                        break
                    reply += data
            except OSError:
                pass
        stop.set()
        sampler.join()
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert sent < 50 * 2**20, "the server read the whole 50 MB body"
    assert peak[0] - before < 20, f"resident memory grew by {peak[0] - before:.0f} MiB"


def test_an_unauthenticated_body_is_never_read(answerer):
    with local_client(app_of(answerer, api_key="k")) as c:
        res = c.post("/v1/answer", content=b'{"question": "Q?"}', headers=JSON)
        assert res.status_code == 401


@pytest.mark.parametrize("path", ["/v1/answer", "/v1/chat/completions"])
def test_deeply_nested_json_is_a_400_not_a_500(answerer, path):
    body = b'{"question": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with local_client(app_of(answerer)) as c:
        res = c.post(path, content=body, headers=JSON)
    assert res.status_code == 400, res.text


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
@pytest.mark.parametrize("path", ["/v1/answer", "/v1/chat/completions", "/v1/completions"])
def test_a_body_that_is_not_json_is_refused_with_415(answerer, path, content_type):
    """A web page can send text/plain or a form without asking the browser's permission (no
    preflight): such a request must not be read as JSON."""
    body = json.dumps(
        {"question": "Q?", "model": "answers", "prompt": "Q?", "messages": [{"role": "user", "content": "Q?"}]}
    )
    headers = {"content-type": content_type} if content_type else {}
    with local_client(app_of(answerer)) as c:
        res = c.post(path, content=body, headers=headers)
    assert res.status_code == 415, res.text


# ---------------------------------------------------------------- hosts, origins, keys


def test_requests_for_another_host_are_refused(answerer):
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 sends Host: evil.example."""
    app = app_of(answerer, allowed_host=["qa.internal"])
    with local_client(app) as c:
        assert c.post("/v1/answer", json={"question": "Q?"}, headers={"host": "evil.example"}).status_code == 400
        assert c.get("/health", headers={"host": "evil.example:8000"}).status_code == 400
        assert c.get("/health", headers={"host": "localhost:8000"}).status_code == 200
        assert c.get("/health", headers={"host": "qa.internal"}).status_code == 200


def test_no_cross_origin_access_unless_an_origin_is_allowed(answerer):
    preflight = {
        "origin": "https://app.example.org",
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
    }
    with local_client(app_of(answerer)) as c:
        res = c.options("/v1/answer", headers=preflight)
        assert "access-control-allow-origin" not in res.headers
        res = c.post("/v1/answer", json={"question": "Q?"}, headers={"origin": "https://app.example.org"})
        assert "access-control-allow-origin" not in res.headers
    with local_client(app_of(answerer, cors_origins=["https://app.example.org"])) as c:
        res = c.options("/v1/answer", headers=preflight)
        assert res.status_code == 200 and res.headers["access-control-allow-origin"] == "https://app.example.org"


@pytest.mark.parametrize("key", ["", "   "])
def test_an_empty_or_blank_key_is_refused_at_start(answerer, key, monkeypatch):
    from helpers import run_cli
    from loraqa.errors import UsageError

    with pytest.raises(UsageError, match="empty"):
        app_of(answerer, api_key=key)
    res = run_cli("serve", "-a", "x=/nowhere", "--api-key", key)
    assert res.exit_code == 2 and "API key is empty" in res.stderr
    monkeypatch.setenv("LORAQA_ADMIN_KEY", key)  # `export LORAQA_ADMIN_KEY=$UNSET`
    res = run_cli("serve", "-a", "x=/nowhere")
    assert res.exit_code == 2 and "admin key is empty" in res.stderr


def test_non_admins_see_adapter_names_not_paths(answerer, two_adapters):
    with local_client(app_of(answerer, api_key="ask", admin_key="admin")) as c:
        asked = c.get("/v1/adapters", headers={"Authorization": "Bearer ask"}).json()
        admin = c.get("/v1/adapters", headers={"Authorization": "Bearer admin"}).json()
    assert [a["name"] for a in asked["adapters"]] == ["answers", "titles", "base"]
    assert str(two_adapters["answers"]) not in json.dumps(asked) and asked["base_model"] is None
    assert str(two_adapters["answers"]) in json.dumps(admin)


# ---------------------------------------------------------------- bounded work


def test_a_completion_with_20000_prompts_is_refused_before_any_planning(answerer):
    app = app_of(answerer)
    held = HeldModel(app)
    held.gate.set()
    with local_client(app) as c:
        start = time.perf_counter()
        res = c.post(
            "/v1/completions", json={"model": "answers", "prompt": ["Q?"] * 20_000, "context": "word " * 200_000}
        )
        took = time.perf_counter() - start
    assert res.status_code == 413 and "64" in res.json()["error"]["message"]
    assert held.calls == [] and took < 5


def test_a_request_needing_too_many_windows_is_refused(answerer):
    with local_client(app_of(answerer, max_request_windows=3)) as c:
        res = c.post("/v1/answer", json={"question": "Q?", "context": "word " * 5_000, "adapter": "answers"})
    assert res.status_code == 413 and "at most 3" in res.json()["detail"]


def test_a_full_queue_answers_503_with_retry_after_and_recovers(answerer, two_adapters):
    app = app_of(answerer, max_queued_windows=6, max_batch=1)
    held = HeldModel(app)
    row = two_adapters["rows"][0]
    q = {"question": row["question"], "context": row["context"]}

    async def scenario(client):
        first = asyncio.create_task(client.post("/v1/answer/batch", json={"requests": [q] * 5}))
        while not held.calls:
            await asyncio.sleep(0.01)
        refused = await client.post("/v1/answer/batch", json={"requests": [q] * 3})  # 4 queued + 3 > 6
        held.gate.set()
        return refused, await first, await client.post("/v1/answer", json=q)

    refused, first, after = asyncio.run(in_app(app, scenario))
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert first.status_code == 200 and after.status_code == 200


def test_a_request_past_its_deadline_gets_504_and_its_windows_are_dropped(answerer, two_adapters):
    app = app_of(answerer, request_timeout_s=0.5, max_batch=1)
    held = HeldModel(app)
    row = two_adapters["rows"][0]
    q = {"question": row["question"], "context": row["context"]}

    async def scenario(client):
        res = await client.post("/v1/answer/batch", json={"requests": [q] * 4})
        queued = app.state.batcher.queued
        held.gate.set()
        await asyncio.sleep(0.3)
        return res, queued, len(held.calls)

    res, queued, calls = asyncio.run(in_app(app, scenario))
    assert res.status_code == 504 and "timeout" in res.json()["detail"]
    assert queued == 0  # the 3 windows still waiting were dropped at once
    assert calls == 1  # only the window already in flight ran


def test_a_client_that_disconnects_leaves_no_work_behind(answerer, two_adapters):
    app = app_of(answerer, max_batch=1)
    held = HeldModel(app)
    row = two_adapters["rows"][0]
    body = json.dumps({"requests": [{"question": row["question"], "context": row["context"]}] * 6}).encode()
    with live_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(
            b"POST /v1/answer/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        deadline = time.time() + 10
        while not held.calls and time.time() < deadline:
            time.sleep(0.01)
        assert app.state.batcher.queued == 5
        s.close()
        while app.state.batcher.queued and time.time() < deadline:
            time.sleep(0.05)
        dropped = app.state.batcher.queued == 0
        held.gate.set()
        time.sleep(0.3)
    assert dropped and len(held.calls) == 1


def test_fairness_is_per_request_not_per_question(answerer, two_adapters):
    """A request with 64 questions gets the same turns as one with a single question."""
    app = app_of(answerer, max_batch=4)
    held = HeldModel(app)
    row = two_adapters["rows"][0]
    q = {"question": row["question"], "context": row["context"]}

    async def scenario(client):
        big = asyncio.create_task(client.post("/v1/answer/batch", json={"requests": [q] * 64}))
        while not held.calls:
            await asyncio.sleep(0.01)
        small = asyncio.create_task(client.post("/v1/answer", json=q))
        await asyncio.sleep(0.2)  # the small request is planned and queued behind 60 windows
        held.gate.set()
        small_done = (await small, app.state.batcher.batches)
        return small_done, await big

    (small, batches_then), big = asyncio.run(in_app(app, scenario))
    assert small.status_code == 200 and big.status_code == 200
    assert batches_then <= 3  # the one it waited behind, then its own (not 16 batches later)


def test_planning_does_not_wait_behind_a_model_call(answerer):
    app = app_of(answerer)
    held = HeldModel(app)

    async def scenario(client):
        busy = asyncio.create_task(client.post("/v1/answer", json={"question": "Q?", "context": "some text"}))
        while not held.calls:
            await asyncio.sleep(0.01)
        start = time.perf_counter()
        bad = await client.post("/v1/answer", json={"question": "Q?", "context": "   "})
        took = time.perf_counter() - start
        held.gate.set()
        await busy
        return bad, took

    bad, took = asyncio.run(in_app(app, scenario))
    assert bad.status_code == 422 and took < 2


# ---------------------------------------------------------------- one bad request never fails another


def test_wrong_number_types_are_refused_at_the_edge(answerer):
    with local_client(app_of(answerer)) as c:
        res = c.post(
            "/v1/chat/completions",
            json={
                "model": "answers",
                "max_tokens": 1.5,
                "max_completion_tokens": 4,
                "messages": [{"role": "user", "content": "Q?"}],
            },
        )
        assert res.status_code == 400 and res.json()["error"]["param"] == "max_tokens"
        res = c.post("/v1/answer", json={"question": 5})
        assert res.status_code == 422


def test_a_failing_window_fails_only_its_own_request(answerer, two_adapters):
    app = app_of(answerer, max_batch=8)
    held = HeldModel(app)
    poisoned = "Which question breaks the model?"

    def run(batch):
        held.calls.append(len(batch))
        assert held.gate.wait(30)
        if any(getattr(reading, "_poison", False) for reading, _ in batch):
            raise RuntimeError("a window the model cannot take")
        return held.real(batch)

    real_plan = answerer.plan

    def plan(request, *a, **k):
        reading = real_plan(request, *a, **k)
        reading._poison = request["question"] == poisoned
        return reading

    app.state.batcher.run_fn = run
    row = two_adapters["rows"][0]
    good = {"question": row["question"], "context": row["context"]}

    async def scenario(client):
        answerer.plan = plan
        try:
            held_batch = asyncio.create_task(client.post("/v1/answer", json=good))
            while not held.calls:
                await asyncio.sleep(0.01)
            tasks = [
                asyncio.create_task(client.post("/v1/answer", json=good)),
                asyncio.create_task(client.post("/v1/answer", json={**good, "question": poisoned})),
            ]
            await asyncio.sleep(0.2)  # both planned and queued: they share the next batch
            held.gate.set()
            return await held_batch, *[await t for t in tasks]
        finally:
            answerer.plan = real_plan

    first, ok, bad = asyncio.run(in_app(app, scenario))
    assert first.status_code == 200 and ok.status_code == 200 and ok.json()["answer"] == row["answers"]["text"][0]
    assert bad.status_code == 500 and "cannot take" not in bad.text
    assert held.calls[1] == 2  # the two shared one batch, which failed, then each was answered alone


def test_health_says_503_when_the_batcher_has_stopped(answerer):
    app = app_of(answerer)

    async def scenario(client):
        ok = await client.get("/health")
        app.state.batcher.task.cancel()
        await asyncio.sleep(0.05)
        return ok, await client.get("/health")

    ok, dead = asyncio.run(in_app(app, scenario))
    assert ok.status_code == 200 and dead.status_code == 503 and dead.json()["status"] == "unavailable"


def test_metric_labels_stay_bounded(answerer):
    with local_client(app_of(answerer)) as c:
        c.post("/v1/answer", json={"question": "Q?", "adapter": "answers"})
        before = c.get("/metrics").text
        for i in range(300):
            c.get(f"/random/{i}")
            c.post("/v1/answer", json={"question": "Q?", "adapter": f"nope{i}"})
        after = c.get("/metrics").text
    labels = {line.rsplit(" ", 1)[0] for line in after.splitlines() if not line.startswith("#")}
    assert not any("nope" in label or "/random" in label for label in labels)
    assert len(after) < len(before) + 4_000  # a few new series (unmatched, unknown, 404), not 600


# ---------------------------------------------------------------- unloading


def test_unloading_waits_for_windows_in_flight_without_blocking_the_server(two_adapters):
    from loraqa.inference.answerer import Answerer

    answerer = Answerer({"answers": str(two_adapters["answers"]), "titles": str(two_adapters["titles"])}, dtype="fp32")
    app = app_of(answerer, admin_key="k", max_batch=1)
    held = HeldModel(app)
    row = two_adapters["rows"][0]
    q = {"question": row["question"], "context": row["context"], "adapter": "titles"}
    key = {"Authorization": "Bearer k"}

    async def scenario(client):
        in_flight = asyncio.create_task(client.post("/v1/answer/batch", json={"requests": [q] * 3}, headers=key))
        while not held.calls:
            await asyncio.sleep(0.01)
        unload = asyncio.create_task(client.delete("/v1/adapters/titles", headers=key))
        await asyncio.sleep(0.1)
        start = time.perf_counter()
        health = await client.get("/health")  # the event loop is free while the unload waits
        took = time.perf_counter() - start
        new = await client.post("/v1/answer", json=q, headers=key)  # after the unload began: 404
        held.gate.set()
        return await in_flight, await unload, health, took, new

    in_flight, unload, health, took, new = asyncio.run(in_app(app, scenario))
    assert health.status_code == 200 and took < 1
    assert new.status_code == 404
    assert in_flight.status_code == 200 and [a["answer"] for a in in_flight.json()["answers"]] == [row["title"]] * 3
    assert unload.status_code == 200 and "titles" not in answerer.names


def test_batches_keep_short_windows_apart_from_long_ones_and_new_documents_start_small(
    answerer, two_adapters, squad_rows
):
    """A short question is not padded to a long document's full-length windows (that would make
    its batch cost several times more), and a new document starts with two windows a batch, so
    one whose client goes away at once has cost two windows, not a full batch."""
    app = app_of(answerer, max_batch=32)
    batcher = app.state.batcher
    lengths, real = [], batcher.run_fn

    def recording(batch):
        lengths.append([len(reading.inputs[i].source) for reading, i in batch])  # the order it was taken in
        return real(batch)

    batcher.run_fn = recording
    row = two_adapters["rows"][0]
    document = " ".join(r["context"] for r in squad_rows) * 3
    short = {"question": row["question"], "context": row["context"][:80]}

    async def scenario(client):
        long_task = asyncio.create_task(
            client.post("/v1/answer", json={"question": row["question"], "context": document})
        )
        while len(lengths) < 1:
            await asyncio.sleep(0.001)
        small = await client.post("/v1/answer", json=short)
        return await long_task, small

    long_res, small = asyncio.run(in_app(app, scenario))
    assert long_res.status_code == 200 and small.status_code == 200
    assert len(lengths[0]) == 2 and len(lengths[1]) >= 4  # slow start: 2, 4, 8, ... (and the short one)
    # no long window ever joined a batch of short ones (a short one may join long ones: one more row)
    assert all(n <= 1.5 * max(batch[:j]) for batch in lengths for j, n in enumerate(batch) if j), lengths
    short_batch = next(k for k, batch in enumerate(lengths) if min(batch) < 100)
    assert short_batch <= 2  # answered within the batch after the one running when it came


def test_a_long_window_does_not_join_a_batch_of_short_ones(answerer, two_adapters, squad_rows):
    app = app_of(answerer, max_batch=4)
    held = HeldModel(app)
    lengths, real = [], held.run

    def recording(batch):
        lengths.append([len(reading.inputs[i].source) for reading, i in batch])
        return real(batch)

    app.state.batcher.run_fn = recording
    row = two_adapters["rows"][0]
    short = {"question": row["question"], "context": row["context"][:80]}
    document = " ".join(r["context"] for r in squad_rows) * 3

    async def scenario(client):
        five = asyncio.create_task(client.post("/v1/answer/batch", json={"requests": [short] * 5}))
        while not held.calls:
            await asyncio.sleep(0.001)  # 4 of its windows in the held batch, 1 waiting
        long_task = asyncio.create_task(
            client.post("/v1/answer", json={"question": row["question"], "context": document})
        )
        while app.state.batcher.queued < 2:
            await asyncio.sleep(0.001)
        held.gate.set()
        return await five, await long_task

    five, long_res = asyncio.run(in_app(app, scenario))
    assert five.status_code == 200 and long_res.status_code == 200
    assert lengths[1] == lengths[0][:1]  # the short question's last window alone, the document's after it
    assert min(lengths[2]) > 1.5 * max(lengths[1])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ray-address", "auto"], "--ray-address is for serving on Ray: add --ray"),
        (["--ray", "--min-replicas", "2"], "autoscaling needs both --min-replicas and --max-replicas"),
        (["--ray", "--min-replicas", "3", "--max-replicas", "2"], "--min-replicas must be at least 1 and at most"),
    ],
)
def test_ray_layouts_that_cannot_work_are_one_line_before_anything_starts(args, message):
    from helpers import run_cli

    res = run_cli("serve", "-a", "x=/nowhere", *args)
    assert res.exit_code == 2 and message in res.stderr and "Traceback" not in res.stderr
