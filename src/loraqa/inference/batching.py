"""Gathering concurrent requests into batches for the server.

Requests wait in a queue for a short window (or until a batch is full); the batch, which may
mix adapters, is answered in one call on a worker thread so the event loop stays free.
Written by hand: FastAPI/uvicorn serve one request per handler and have no batching, and the
LLM serving engines that do (vLLM, LoRAX) do not run encoder-decoder models.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class Pending:
    request: dict
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher:
    def __init__(self, answer_fn, window_ms: float = 10.0, max_batch: int = 32):
        self.answer_fn = answer_fn  # list[dict] -> list[str], blocking
        self.window = window_ms / 1000.0
        self.max_batch = max(1, max_batch)
        self.queue: asyncio.Queue[Pending] | None = None
        self.task: asyncio.Task | None = None
        self.batches = 0

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    async def submit(self, requests: list[dict]) -> list[str]:
        loop = asyncio.get_running_loop()
        pending = [Pending(r, loop.create_future()) for r in requests]
        for p in pending:
            self.queue.put_nowait(p)
        return list(await asyncio.gather(*(p.future for p in pending)))

    async def _run(self) -> None:
        while True:
            first = await self.queue.get()
            batch = [first]
            deadline = time.perf_counter() + self.window
            while len(batch) < self.max_batch:
                timeout = deadline - time.perf_counter()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            await self._answer(batch)

    async def _answer(self, batch: list[Pending]) -> None:
        self.batches += 1
        try:
            answers = await asyncio.to_thread(self.answer_fn, [p.request for p in batch])
        except Exception as exc:  # noqa: BLE001 - a failing batch fails its requests, never the server
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        for p, a in zip(batch, answers):
            if not p.future.done():
                p.future.set_result(a)
