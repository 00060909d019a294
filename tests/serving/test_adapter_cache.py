"""The adapter registry and the server's adapter cache, without a server or a model: an engine
that records what it is asked stands in for the model (the cache's contract is about which
adapter is attached and detached when, not about answers).

What a user would see go wrong: an adapter in use detached under a request (its answers fail),
a pinned adapter evicted (the first request after pays a load), the adapter a user asks for most
evicted before one nobody asked for in a while, a broken adapter left half attached, a reserved
name accepted (and `base` then meaning two things)."""

from __future__ import annotations

import asyncio
import json

import pytest

from loraqa.adapters.folder import ADAPTER_CONFIG_NAME
from loraqa.config import dump_config, load_config
from loraqa.errors import AdapterExists, DeadlineExceeded, UsageError
from loraqa.inference.engines import Capabilities
from loraqa.inference.registry import AdapterRegistry, check_name
from loraqa.serving.adapter_cache import AdapterCache


class RecordingEngine:
    kind = "recording"
    capabilities = Capabilities(base_model=True, teacher_forcing=False, extractive=False, mixed_beam_batches=True)
    device, dtype = "cpu", "fp32"

    def __init__(self, failing: set[str] = frozenset()):
        self.attached: list[str] = []
        self.log: list[tuple[str, str]] = []
        self.failing = failing

    def check(self, ref) -> None:
        pass

    def attach(self, name: str, ref) -> None:
        self.log.append(("attach", name))
        self.attached.append(name)
        if name in self.failing:
            raise RuntimeError("the weights do not fit")

    def detach(self, name: str) -> None:
        self.log.append(("detach", name))
        if name in self.attached:
            self.attached.remove(name)


class ModelThread:
    """The batcher's part the cache uses: which adapters queued requests use, and a call on the
    model thread (here: at once)."""

    def __init__(self):
        self.in_use: set[str] = set()

    def uses(self, name: str) -> bool:
        return name in self.in_use

    async def on_model_thread(self, fn, *args):
        return fn(*args)


def adapter_folder(path):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (path / "adapter_model.safetensors").write_bytes(b"")
    (path / ADAPTER_CONFIG_NAME).write_text(dump_config(load_config("default")))
    return path


@pytest.fixture
def root(tmp_path):
    for name in ("a", "b", "c", "d", "p"):
        adapter_folder(tmp_path / "root" / name)
    return tmp_path / "root"


def library(root, max_loaded: int, pinned=()):
    engine = RecordingEngine()
    registry = AdapterRegistry(engine)
    return AdapterCache(registry, ModelThread(), root, max_loaded, set(pinned)), engine


async def ask(lib, *names):
    async with lib.hold(set(names)):
        pass


def test_the_least_recently_used_goes_first_never_a_pinned_or_a_held_one(root):
    lib, engine = library(root, max_loaded=3, pinned={"p"})

    async def run():
        await lib.load_pinned()
        await ask(lib, "a")
        await ask(lib, "b")
        await ask(lib, "a")  # a used again: b is now the least recently used
        await ask(lib, "c")
        assert ("detach", "b") in engine.log and "a" in engine.attached
        async with lib.hold({"a"}):
            await ask(lib, "c")  # a is now the least recently used, but held: c must go for d
            await ask(lib, "d")
            assert set(engine.attached) == {"p", "a", "d"}

    asyncio.run(run())
    assert ("detach", "p") not in engine.log  # pinned: never evicted
    assert [n for op, n in engine.log if op == "detach"] == ["b", "c"]


def test_an_adapter_queued_in_the_batcher_is_not_evicted(root):
    lib, engine = library(root, max_loaded=2)

    async def run():
        await ask(lib, "a")
        await ask(lib, "b")
        lib.batcher.in_use.add("a")  # a's windows wait for the model although a is the least recently used
        await ask(lib, "c")

    asyncio.run(run())
    assert [n for op, n in engine.log if op == "detach"] == ["b"]


def test_a_load_waits_for_a_held_adapter_to_be_let_go_and_times_out_if_it_never_is(root):
    lib, engine = library(root, max_loaded=2)

    async def run():
        async with lib.hold({"a", "b"}):
            with pytest.raises(DeadlineExceeded):
                async with lib.hold({"c"}, timeout=0.2):
                    pass
            assert "c" not in engine.attached  # nothing was evicted for it
        waiting = asyncio.ensure_future(ask(lib, "d"))  # both let go now: d finds room
        await asyncio.wait_for(waiting, 5)

    asyncio.run(run())
    assert "d" in engine.attached and len(engine.attached) == 2


def test_concurrent_requests_for_one_adapter_share_one_load(root):
    lib, engine = library(root, max_loaded=3)

    async def run():
        await asyncio.gather(*(ask(lib, "a") for _ in range(8)))

    asyncio.run(run())
    assert engine.log.count(("attach", "a")) == 1


def test_more_pinned_adapters_than_room_is_refused_at_start(root):
    with pytest.raises(UsageError, match="raise --max-loaded"):
        library(root, max_loaded=2, pinned={"a", "b"})


@pytest.mark.parametrize("name", ["base", "auto", "__base__", "", "-a", "a/b", "../a", "a" * 65, "naïve"])
def test_reserved_and_malformed_names_are_refused(name):
    with pytest.raises(UsageError):
        check_name(name)


def test_the_registry_keeps_no_half_attached_adapter_and_counts_its_room(root):
    engine = RecordingEngine(failing={"b"})
    registry = AdapterRegistry(engine, max_adapters=2)
    registry.load("a", root / "a")
    with pytest.raises(RuntimeError):
        registry.load("b", root / "b")
    assert "b" not in registry.adapters and "b" not in engine.attached  # detached again after the failure
    with pytest.raises(AdapterExists, match="already loaded"):
        registry.load("a", root / "c")
    registry.load("c", root / "c")
    with pytest.raises(AdapterExists, match="the most allowed"):
        registry.load("d", root / "d")
    registry.hide("a")  # being unloaded: no new requests, but it still takes its room
    assert not registry.is_attached("x") and registry.is_attached("a") and "a" not in registry.names
    with pytest.raises(AdapterExists):
        registry.load("d", root / "d")
    registry.detach("a")
    registry.load("d", root / "d")
    assert registry.names == ["c", "d", "base"]
