"""Gathering concurrent requests' windows into batches for the server.

A request is planned into its windows (one for a short passage, hundreds for a long document).
Each model call takes up to `max_batch` windows, one from each waiting request in turn, so a
long document is spread over many batches and a request that arrives meanwhile joins the very
next one: no request waits behind another's document for more than a batch. A batch may mix
adapters; it is answered on a worker thread so the event loop stays free. The first windows of
a quiet moment wait up to `window_ms` for company.
Written by hand: FastAPI/uvicorn serve one request per handler and have no batching, and the
LLM serving engines that do (vLLM, LoRAX) do not run encoder-decoder models.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from loraqa.errors import AdapterNotFound
from loraqa.inference.reading import Answer, Reading, combine


@dataclass
class Pending:
    reading: Reading
    future: asyncio.Future
    handed_out: int = 0  # windows given to a batch
    answered: int = 0
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher:
    def __init__(self, answerer, window_ms: float = 10.0, max_batch: int = 32):
        self.answerer = answerer
        self.run_fn = answerer.run  # one batch of (reading, window) -> fills the readings' results (blocking)
        self.window = window_ms / 1000.0
        self.max_batch = max(1, max_batch)
        self.waiting: deque[Pending] = deque()  # requests with windows not yet handed out
        self.arrived: asyncio.Event | None = None
        self.task: asyncio.Task | None = None
        self.batches = 0
        self.on_batch = None  # called with each model call's number of windows (metrics)

    async def start(self) -> None:
        self.arrived = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    @property
    def queued_windows(self) -> int:
        return sum(len(p.reading.inputs) - p.handed_out for p in self.waiting)

    async def submit(self, requests: list[dict]) -> list[Answer]:
        """Plan (bad input raises here, before queueing), queue the windows, wait for the answers."""
        readings = await asyncio.to_thread(lambda: [self.answerer.plan(r) for r in requests])
        loop = asyncio.get_running_loop()
        pending = [Pending(r, loop.create_future()) for r in readings]
        self.waiting.extend(pending)
        self.arrived.set()
        return list(await asyncio.gather(*(p.future for p in pending)))

    def _take(self) -> list[tuple[Pending, int]]:
        """Up to max_batch windows, one from each waiting request in turn."""
        batch = []
        while self.waiting and len(batch) < self.max_batch:
            p = self.waiting.popleft()
            batch.append((p, p.handed_out))
            p.handed_out += 1
            if p.handed_out < len(p.reading.inputs):
                self.waiting.append(p)
        return batch

    async def _run(self) -> None:
        while True:
            await self.arrived.wait()
            self.arrived.clear()
            deadline = time.perf_counter() + self.window
            while self.queued_windows < self.max_batch and (timeout := deadline - time.perf_counter()) > 0:
                try:
                    await asyncio.wait_for(self.arrived.wait(), timeout)
                    self.arrived.clear()
                except asyncio.TimeoutError:
                    break
            while self.waiting:
                await self._answer(self._take())

    def _fail(self, pending: Pending, exc: Exception) -> None:
        if not pending.future.done():
            pending.future.set_exception(exc)
        if pending in self.waiting:
            self.waiting.remove(pending)

    async def _answer(self, batch: list[tuple[Pending, int]]) -> None:
        # an adapter unloaded while its request waited: fail that request, answer the rest
        loaded = set(self.answerer.names)
        for p, _ in batch:
            if p.reading.adapter not in loaded:
                self._fail(p, AdapterNotFound(f"adapter '{p.reading.adapter}' was unloaded before the answer"))
        batch = [(p, i) for p, i in batch if not p.future.done()]
        if not batch:
            return
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(len(batch))
        try:
            await asyncio.to_thread(self.run_fn, [(p.reading, i) for p, i in batch])
        except Exception as exc:  # noqa: BLE001 - a failing batch fails its requests, never the server
            for p, _ in batch:
                self._fail(p, exc)
            return
        for p, _ in batch:
            p.answered += 1
            if p.answered == len(p.reading.inputs) and not p.future.done():
                p.future.set_result(combine(p.reading, self.answerer.apply_threshold))
