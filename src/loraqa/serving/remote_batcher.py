"""The batcher of a front end whose answers come from model replicas elsewhere (Ray Serve).

The app's routes ask a batcher for answers (`submit`); here that becomes one call per adapter
to the model deployment, each with the adapter as its multiplexed model id, so that Ray sends
it to a replica that already holds that adapter (serving/ray_app.py). Each replica runs
loraqa's own batcher and adapter cache; a request naming several adapters (/v1/answer/batch)
is split per adapter and put back together in its order.

Errors cross the process boundary as (type, args, attributes) and are rebuilt here, so a route
sees the very LoraqaError a local batcher would have raised (its status, code, Retry-After).
Pickling the exception itself would call its constructor with its message, which several of
loraqa's errors do not take.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from loraqa.adapters.names import BASE
from loraqa.errors import DeadlineExceeded, LoraqaError
from loraqa.inference.reading import Answer
from loraqa.serving.batching import ClientGone, until_gone
from loraqa.serving.limits import ServerLimits

NO_ADAPTER = ""  # the multiplexed id of the base model: any replica answers it


def error_parts(exc: LoraqaError) -> tuple[type[LoraqaError], tuple, dict]:
    return type(exc), exc.args, dict(vars(exc))


def rebuilt(parts: tuple[type[LoraqaError], tuple, dict]) -> LoraqaError:
    kind, args, attributes = parts
    exc = kind.__new__(kind)
    exc.args = args
    vars(exc).update(attributes)
    return exc


class RemoteBatcher:
    """What the app asks of a batcher, done by a model deployment's replicas.

    `handle` is a Ray Serve DeploymentHandle of the model deployment (its `answer` method)."""

    remote = True  # routes that act on one process's adapters refuse on this path

    def __init__(self, handle: Any, limits: ServerLimits | None = None):
        self.handle = handle
        self.limits = limits or ServerLimits()
        self.metrics: Any = None  # the front end's ServerMetrics: replicas' loads and evictions are added to it
        self.queued = 0  # requests sent to the replicas and not answered yet
        self.batches = 0  # calls answered by the replicas
        self.loaded_by_replica: dict[str, int] = {}
        self.pause_between_batches_s = 0.0
        self.started = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    @property
    def alive(self) -> bool:
        return self.started

    @property
    def loaded(self) -> int:
        """Adapters attached over all replicas, as each last said."""
        return sum(self.loaded_by_replica.values())

    # what the adapter cache and the adapter routes ask of a local batcher: nothing is attached here
    def uses(self, adapter: str) -> bool:
        return False

    async def drained(self, adapter: str) -> None:
        return None

    async def on_model_thread(self, fn, *args):
        return fn(*args)

    async def submit(
        self,
        requests: list[dict],
        request_id: str = "-",
        timeout: float | None = None,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> list[Answer]:
        """The answers to `requests` (dicts with their adapter named, as for Batcher.submit),
        in their order, from one replica call per adapter."""
        timeout = timeout or self.limits.request_timeout_s
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(request.get("adapter") or NO_ADAPTER, []).append(i)
        calls = {
            adapter: self.handle.options(
                multiplexed_model_id="" if adapter in (NO_ADAPTER, BASE) else adapter
            ).answer.remote([requests[i] for i in rows], request_id, timeout)
            for adapter, rows in groups.items()
        }
        self.queued += len(calls)
        waiting: dict[asyncio.Future, str] = {
            asyncio.ensure_future(self._result(response)): adapter for adapter, response in calls.items()
        }
        watch = asyncio.ensure_future(until_gone(disconnected)) if disconnected else None
        try:
            pending: set[asyncio.Future] = set(waiting) | ({watch} if watch else set())
            deadline = asyncio.get_running_loop().time() + timeout + 5  # the replica's own deadline comes first
            answers: list[Answer | None] = [None] * len(requests)
            while any(not f.done() for f in waiting):
                done, pending = await asyncio.wait(
                    pending,
                    timeout=max(0.0, deadline - asyncio.get_running_loop().time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done:
                    raise DeadlineExceeded(f"no answer within the server's request timeout ({timeout:g} s)")
                if watch is not None and watch in done:
                    raise ClientGone("the client disconnected")
                for future in done:
                    for i, answer in zip(groups[waiting[future]], future.result(), strict=True):
                        answers[i] = answer
            missing = [i for i, a in enumerate(answers) if a is None]
            if missing:  # a replica answered fewer questions than it was asked: never shift the others
                raise RuntimeError(f"no answer came back for questions {missing} of request {request_id}")
            return [a for a in answers if a is not None]
        finally:
            self.queued -= len(calls)
            if watch is not None:
                watch.cancel()
            for future in waiting:
                if not future.done():
                    future.cancel()
            for response in calls.values():
                response.cancel()  # an answered call ignores it; one still queued or running is dropped

    async def _result(self, response) -> list[Answer]:
        reply = await response
        self.batches += 1
        self.loaded_by_replica[reply["replica"]] = reply["loaded"]
        if self.metrics is not None:
            for what in ("loads", "evictions"):
                counter = getattr(self.metrics, f"adapter_{what}")
                for name, n in reply[what].items():
                    counter.labels(adapter=name).inc(n)
        if reply.get("error") is not None:
            raise rebuilt(reply["error"])
        return reply["answers"]
