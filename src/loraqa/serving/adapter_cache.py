"""The server's adapter cache: with an adapter root, every adapter in it can be asked for and a
few stay attached; without one, the adapters given at start, all attached, nothing loaded later.

A request naming an adapter that lies in the root (`--adapter-root DIR`, one folder per adapter,
the folder's name is the adapter's) but is not attached waits while it loads; concurrent
requests for it share that one load. At most `max_loaded` stay attached: before a load, the
least recently used one is detached, never a pinned one (`--pin`, and every adapter given at
start), never one a request holds (planned, queued or in a batch). When every attached adapter
is held, the load waits for one to be let go. The catalogue of the root (names, folders, domain
profiles, which are small) is kept whole, so listings and `auto` routing see every adapter; a
name it does not know is looked for in the root again, so an adapter copied in later is found.

Loads and evictions are counted per adapter for Prometheus; so are requests answered by an
adapter already attached (hits) and those that had to wait for a load (misses).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from loraqa.adapters.names import BASE, NAME_PATTERN
from loraqa.adapters.root import find_in_root
from loraqa.domain_profile import DomainProfile
from loraqa.errors import AdapterNotFound, DeadlineExceeded, LoraqaError, NotAnAdapter, UsageError
from loraqa.inference.registry import AdapterRegistry
from loraqa.inference.routing import AUTO, route

log = logging.getLogger("loraqa.serve")


@dataclass
class Entry:
    name: str
    folder: Path
    profile: DomainProfile | None


class ModelThread(Protocol):
    """What the cache needs of the batcher: a turn on the model's thread between batches, and
    whether any queued or running window uses an adapter (it is not evicted then)."""

    async def on_model_thread(self, fn: Callable, *args) -> Any: ...

    def uses(self, adapter: str) -> bool: ...


class AdapterCache:
    def __init__(
        self,
        registry: AdapterRegistry,
        batcher: ModelThread,
        root: Path | None = None,
        max_loaded: int | None = None,
        pinned: set[str] | None = None,
        max_bytes: int | None = None,
        metrics=None,
        loads_here: bool = True,
    ):
        """root: the adapter root (None: only the adapters given at start); max_loaded: how many
        may stay attached (the registry's limit when not given); loads_here False: a catalogue
        only, for a front end whose model replicas hold and load the adapters (serving/ray_app.py)."""
        self.root, self.registry, self.batcher = root, registry, batcher
        self.loads_here = loads_here
        self.max_loaded: int = max_loaded or registry.max_adapters or 2**31  # no limit given: none
        self.max_bytes, self.metrics = max_bytes, metrics
        self.pinned = set(pinned or ()) | set(registry.adapters)  # adapters given at start stay
        if root is not None and len(self.pinned) >= self.max_loaded:
            raise UsageError(
                f"{len(self.pinned)} adapters are pinned or given at start, and at most {self.max_loaded} "
                "may stay loaded: nothing could be loaded on demand; raise --max-loaded"
            )
        self.catalogue: dict[str, Entry] = {}
        self.used: OrderedDict[str, float] = OrderedDict((n, time.monotonic()) for n in registry.adapters)
        self.holds: dict[str, int] = {}
        self.loading: dict[str, asyncio.Future] = {}
        self.reserved: set[str] = set()  # loads that made room and are attaching
        self._released = asyncio.Event()
        self.scan()
        for name in sorted(self.pinned - set(registry.adapters)):
            if name not in self.catalogue:
                raise UsageError(f"--pin {name}: no adapter of that name in the adapter root {root}")

    # ------------------------------------------------------------ the catalogue

    def scan(self) -> None:
        """Every adapter folder directly inside the root, by folder name."""
        if self.root is None:
            return
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            self._add(folder.name, quiet=True)

    def _add(self, name: str, quiet: bool = False) -> Entry | None:
        if self.root is None or not NAME_PATTERN.fullmatch(name) or name in (BASE, AUTO):
            return None
        try:
            ref = find_in_root(self.root, name)
            entry = Entry(name, ref.adapter_dir, DomainProfile.read(ref.adapter_dir))
        except (AdapterNotFound, NotAnAdapter):
            return None
        except LoraqaError as exc:  # a damaged profile: listed by nobody, said once
            if not quiet:
                raise
            log.warning(f"adapter root: {name} skipped ({exc})")
            return None
        self.catalogue[name] = entry
        return entry

    def knows(self, name: str) -> bool:
        return (
            name in self.catalogue
            or name in self.registry.adapters
            or (name not in (BASE, AUTO) and self._add(name) is not None)
        )

    @property
    def names(self) -> list[str]:
        """Every adapter a request may name: the attached ones first, then the rest of the root."""
        attached = list(self.registry.adapters)
        return attached + sorted(n for n in self.catalogue if n not in self.registry.adapters)

    def profiles(self) -> dict[str, DomainProfile]:
        out = {n: e.profile for n, e in self.catalogue.items() if e.profile is not None}
        for name, adapter in self.registry.adapters.items():
            if adapter.profile is not None:
                out[name] = adapter.profile
        return out

    def route(self, question: str, context: str | None) -> tuple[str, float] | None:
        return route(self.profiles(), question, context)

    # ------------------------------------------------------------ holding adapters for a request

    async def load_pinned(self) -> None:
        """Attach the pinned adapters of the root (at start)."""
        if not self.loads_here:
            return
        for name in sorted(self.pinned):
            if name not in self.registry.adapters:
                await self._ensure(name)

    @asynccontextmanager
    async def hold(self, names: set[str], timeout: float | None = None):
        """The named adapters attached (loaded if need be) and kept so until the block ends;
        DeadlineExceeded when that takes longer than timeout seconds. Without an adapter root every
        adapter a request may name is attached already, and nothing is held."""
        if self.root is None or not self.loads_here:
            yield
            return
        held = []
        try:
            for name in sorted(names):
                if name in (BASE, AUTO) or not self.knows(name):
                    continue  # the registry answers an unknown name with its own 404
                self.holds[name] = self.holds.get(name, 0) + 1
                held.append(name)
                try:
                    await asyncio.wait_for(self._ensure(name), timeout)
                except asyncio.TimeoutError:
                    raise DeadlineExceeded(
                        f"adapter '{name}' could not be loaded within the server's request timeout ({timeout:g} s)"
                    ) from None
            yield
        finally:
            for name in held:
                self.holds[name] -= 1
                if not self.holds[name]:
                    del self.holds[name]
            if held:
                self._released.set()

    async def _ensure(self, name: str) -> None:
        if name in self.registry.adapters:
            self.used[name] = time.monotonic()
            self.used.move_to_end(name)
            self._count("hits", name)
            return
        self._count("misses", name)
        pending = self.loading.get(name)
        if pending is None:
            pending = self.loading[name] = asyncio.ensure_future(self._load(name))
            pending.add_done_callback(lambda _f: self.loading.pop(name, None))
        await asyncio.shield(pending)

    async def _load(self, name: str) -> None:
        entry = self.catalogue[name]
        started = time.monotonic()
        assert self.root is not None  # only adapters of the catalogue load, and it is the root's
        ref = await asyncio.to_thread(find_in_root, self.root, name)
        while name in self.registry.hidden:  # still being detached by an eviction
            await asyncio.sleep(0.01)
        prepared = await asyncio.to_thread(self.registry.prepare, name, ref, self.max_bytes, None, False)
        # Room is made here, in the event loop (no other coroutine runs in between), and a slot
        # is reserved only then, so loads waiting for room never count against each other.
        victim = None
        while len(self.registry.adapters) + len(self.reserved) >= self.max_loaded:
            victim = self._victim()
            if victim is not None:
                self.registry.hide(victim)
                del self.used[victim]
                break
            self._released.clear()
            await self._released.wait()  # every attached adapter is held: wait for one to be let go
        self.reserved.add(name)
        try:
            # one trip to the model thread for both: each trip waits for the batch running
            await self.batcher.on_model_thread(self._swap, victim, prepared)
        finally:
            self.reserved.discard(name)
            self._released.set()  # a failed load frees its slot for the others
        if victim is not None:
            self._count("evictions", victim)
        entry.profile = prepared.profile
        self.used[name] = time.monotonic()
        self._count("loads", name)
        if self.metrics is not None:
            self.metrics.adapter_load_seconds.observe(time.monotonic() - started)

    def _swap(self, victim: str | None, prepared) -> None:
        """On the model thread: detach the victim (if any), attach the new adapter."""
        if victim is not None:
            self.registry.detach(victim)
        self.registry.attach(prepared)

    def _victim(self) -> str | None:
        """The least recently used attached adapter nobody holds (None: there is none)."""
        for name in self.used:
            if (
                name in self.pinned
                or self.holds.get(name)
                or self.batcher.uses(name)
                or name not in self.registry.adapters
            ):
                continue
            return name
        return None

    def _count(self, what: str, name: str) -> None:
        if self.metrics is not None:
            getattr(self.metrics, f"adapter_{what}").labels(adapter=name).inc()
