"""The server's adapter root: adapters loaded on demand by the requests that name
them, at most --max-loaded attached (least recently used detached first, pinned ones never,
never one a request holds), listings and auto routing over every adapter of the root, and
per-adapter loads, evictions and hits in Prometheus. Driven over real HTTP, concurrently."""

from __future__ import annotations

import asyncio
import re
import shutil

import httpx
import pytest

from helpers import live_server

KEY = "lib-key"


@pytest.fixture(scope="module")
def root(tmp_path_factory, domain_adapters):
    """Six adapters in a root: s1..s3 are copies of 'science', p1..p3 of 'places'."""
    folder = tmp_path_factory.mktemp("root")
    for kind, prefix in (("science", "s"), ("places", "p")):
        for i in (1, 2, 3):
            shutil.copytree(domain_adapters["runs"][kind] / "adapter", folder / f"{prefix}{i}")
    (folder / "notes").mkdir()  # not an adapter: ignored
    return folder


def server(root, nodrop_model_dir, **options):
    from loraqa.inference.answerer import Answerer
    from loraqa.serving.app import create_app
    from loraqa.serving.options import ServeOptions

    answerer = Answerer({}, base_model=str(nodrop_model_dir), dtype="fp32")
    return live_server(create_app(answerer, ServeOptions(api_key=KEY, adapter_root=root, **options)))


async def ask_all(url: str, asks: list[tuple[str, dict]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as client:
        return await asyncio.gather(
            *(
                client.post("/v1/answer", json={"question": r["question"], "context": r["context"], "adapter": name})
                for name, r in asks
            )
        )


def counts(url: str, metric: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    return {
        m.group(1): float(m.group(2)) for m in re.finditer(rf'^{metric}_total{{adapter="([^"]+)"}} (\S+)$', text, re.M)
    }


def loaded(url: str) -> set[str]:
    listing = httpx.get(f"{url}/v1/adapters", headers={"Authorization": f"Bearer {KEY}"}).json()["adapters"]
    return {a["name"] for a in listing if a["loaded"] and a["name"] != "base"}


def in_order(url, asks):
    """One request after another (the order decides what is least recently used)."""
    return [asyncio.run(ask_all(url, [a]))[0] for a in asks]


def test_adapters_load_on_demand_and_the_least_recently_used_goes_first(root, nodrop_model_dir, domain_adapters):
    science, places = domain_adapters["rows"]["science"][0], domain_adapters["rows"]["places"][0]
    with server(root, nodrop_model_dir, max_loaded=2) as url:
        models = [
            m["id"] for m in httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()["data"]
        ]
        assert set(models) == {"s1", "s2", "s3", "p1", "p2", "p3", "base", "auto"} and loaded(url) == set()
        got = in_order(url, [("s1", science), ("p1", places), ("s1", science), ("s2", science)])
        assert [r.status_code for r in got] == [200] * 4
        assert [r.json()["answer"] for r in got] == [
            science["answers"]["text"][0],
            places["answers"]["text"][0],
            science["answers"]["text"][0],
            science["answers"]["text"][0],
        ]
        assert loaded(url) == {"s1", "s2"}  # p1 was the least recently used when s2 needed room
        assert counts(url, "loraqa_adapter_evictions") == {"p1": 1.0}
        assert counts(url, "loraqa_adapter_loads") == {"s1": 1.0, "p1": 1.0, "s2": 1.0}
        assert counts(url, "loraqa_adapter_hits") == {"s1": 1.0}
        # an adapter copied into the root while the server runs is found by name
        shutil.copytree(root / "p1", root / "late")
        try:
            assert in_order(url, [("late", places)])[0].json()["answer"] == places["answers"]["text"][0]
        finally:
            shutil.rmtree(root / "late")
        assert (
            httpx.post(
                f"{url}/v1/answer",
                json={"question": "q", "context": "c", "adapter": "nope"},
                headers={"Authorization": f"Bearer {KEY}"},
            ).status_code
            == 404
        )


def test_a_pinned_adapter_stays_and_concurrent_requests_share_one_load(root, nodrop_model_dir, domain_adapters):
    science, places = domain_adapters["rows"]["science"][0], domain_adapters["rows"]["places"][0]
    with server(root, nodrop_model_dir, max_loaded=2, pin=["p3"]) as url:
        assert loaded(url) == {"p3"}  # loaded at start
        got = asyncio.run(ask_all(url, [("s3", science)] * 8))
        assert [r.status_code for r in got] == [200] * 8
        assert counts(url, "loraqa_adapter_loads")["s3"] == 1.0  # eight requests, one load
        in_order(url, [("s1", science), ("s2", science), ("p3", places)])
        assert "p3" in loaded(url) and "p3" not in counts(url, "loraqa_adapter_evictions")


def test_evictions_never_fail_a_request_in_flight(root, nodrop_model_dir, domain_adapters):
    """One slot, requests for four adapters at once: each waits for the slot instead of losing
    its adapter mid-batch, and every one is answered by the adapter it named."""
    rows = {"s": domain_adapters["rows"]["science"][0], "p": domain_adapters["rows"]["places"][0]}
    asks = [(name, rows[name[0]]) for name in ("s1", "p1", "s2", "p2") * 3]
    with server(root, nodrop_model_dir, max_loaded=1) as url:
        got = asyncio.run(ask_all(url, asks))
        assert [r.status_code for r in got] == [200] * len(asks), [r.text for r in got if r.status_code != 200]
        assert [(r.json()["adapter"], r.json()["answer"]) for r in got] == [
            (name, row["answers"]["text"][0]) for name, row in asks
        ]
        assert len(loaded(url)) == 1


def test_auto_routes_over_every_adapter_of_the_root(root, nodrop_model_dir, domain_adapters):
    science = domain_adapters["rows"]["science"][0]
    with server(root, nodrop_model_dir, max_loaded=2) as url:
        res = asyncio.run(ask_all(url, [("auto", science)]))[0].json()
        assert res["adapter"].startswith("s") and res["route_score"] > 0
        assert res["answer"] == science["answers"]["text"][0]


def test_pins_and_limits_without_a_root_are_refused(root, nodrop_model_dir):
    from loraqa.errors import UsageError
    from loraqa.inference.answerer import Answerer
    from loraqa.serving.app import create_app
    from loraqa.serving.options import ServeOptions

    answerer = Answerer({}, base_model=str(nodrop_model_dir), dtype="fp32")
    for options, says in (
        ({"pin": ["s1"]}, "give --adapter-root"),
        ({"adapter_root": root, "pin": ["zz"]}, "--pin zz"),
        ({"adapter_root": root, "pin": ["s1", "s2"], "max_loaded": 2}, "raise --max-loaded"),
    ):
        with pytest.raises(UsageError, match=re.escape(says)):
            create_app(answerer, ServeOptions(**options))
