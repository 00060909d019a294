"""Gathering concurrent requests' windows into batches for the server, within its limits.

A request (an HTTP request or an MCP tool call, with one or many questions) becomes a Ticket:
its questions planned into windows (one for a short passage, hundreds for a long document).
Each model call takes up to `max_batch` windows, one from each waiting ticket in turn, so a long
document is spread over many batches and a request that arrives meanwhile joins the very next
one: no request waits behind another's document for more than a batch, and a request with 64
questions gets the same turns as one with a single question. A new request starts with two
windows a batch (or one for each of its questions), doubling with each batch it gets (like TCP's
slow start): a long document
reaches full batches within a few, while one whose client drops it after a moment has cost a
few windows, not a full batch of them. A batch also stops at
`max_batch_tokens` padded input tokens (rows x longest row): a batch of full-length windows
costs more than one of short passages, and a batch that takes seconds is what everyone who
arrives meanwhile waits for. A batch may mix adapters. The first windows of a quiet moment wait
up to `window_ms` for company.

Threads keep the event loop free: the model thread runs every model call, and also every
adapter attach and detach, so those never race a batch; two planning threads tokenise new
requests, so planning never waits behind a model call, and a short request is planned while a
long document is. Each thread has its own tokenizer.

Limits (serving/limits.py) are enforced here, where requests become windows: windows per
request (413), windows queued in all (503 with Retry-After), the request's deadline (504, its
windows dropped), and a client that went away (its windows dropped). A batch that fails is
answered again request by request, so a failing window fails only its own request.

Written by hand: FastAPI/uvicorn serve one request per handler and have no batching, and the
LLM serving engines that do (vLLM, LoRAX) do not run encoder-decoder models.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from loraqa.errors import AdapterNotFound, DeadlineExceeded, Overloaded, TooMuchWork
from loraqa.inference.reading import Answer, Job, Reading
from loraqa.serving.limits import ServerLimits
from loraqa.serving.memory import MemoryReleaser

log = logging.getLogger("loraqa.server")
PLANNERS = 2  # planning threads
LONGER = 1.5  # a window this many times longer than a batch's longest waits for the next batch


class ClientGone(Exception):
    """The client disconnected before its answer was ready; its windows were dropped."""


async def until_gone(disconnected: Callable[[], Awaitable[bool]]) -> None:
    """Returns when `disconnected()` says the client went away (asked every 50 ms)."""
    while not await disconnected():
        await asyncio.sleep(0.05)


@dataclass(eq=False)
class Ticket:
    """One request's work: its readings, the windows not yet handed out, its answers' future."""

    readings: list[Reading]
    future: asyncio.Future
    request_id: str
    pending: deque = field(init=False)  # (reading, window) not yet given to a batch
    in_flight: int = 0
    answered: int = 0
    share: int = 2  # most windows it may have in the next batch: doubles with every batch it gets

    def __post_init__(self):
        self.pending = deque((r, i) for r in self.readings for i in range(len(r.inputs)))
        self.total = len(self.pending)
        self.adapters = frozenset(r.adapter for r in self.readings)
        self.share = max(self.share, len(self.readings))  # every question of it may be in its first batch

    @property
    def finished(self) -> bool:
        return self.future.done() and self.in_flight == 0


class Batcher:
    def __init__(
        self,
        answerer,
        window_ms: float = 10.0,
        max_batch: int = 32,
        limits: ServerLimits | None = None,
        max_batch_tokens: int = 8192,
    ):
        self.answerer = answerer
        self.run_fn: Callable[[list[Job]], None] = answerer.run  # one batch of windows -> fills their results
        self.window = window_ms / 1000.0
        self.max_batch, self.max_batch_tokens = max(1, max_batch), max_batch_tokens
        self.limits = limits or ServerLimits()
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="loraqa-model")
        self.planner = ThreadPoolExecutor(PLANNERS, thread_name_prefix="loraqa-plan")
        self.tokenizers = threading.local()  # each planning thread's own copy of the tokenizer
        self.waiting: deque[Ticket] = deque()  # tickets with windows not yet handed out
        self.tickets: set[Ticket] = set()  # every ticket not finished (waiting or with windows in flight)
        self.queued = 0  # windows of waiting tickets not yet handed out
        # made again by start(): an Event binds to the event loop of its first wait, and a server
        # may be started again in another loop (a test client's)
        self.arrived = asyncio.Event()
        self.changed = asyncio.Event()  # set (and replaced) whenever windows finish or drop
        self.task: asyncio.Task | None = None
        self.batches = 0
        self.on_batch: Callable[[int], object] | None = (
            None  # called with each model call's number of windows (metrics)
        )
        # Set by the adapter cache: after each batch, let the requests it answered finish (and
        # let go of their adapters) so that adapter swaps reach the model thread before the next
        # batch, instead of one swap per batch.
        self.pause_between_batches_s = 0.0
        self.memory = MemoryReleaser()

    # ------------------------------------------------------------ life

    async def start(self) -> None:
        self.arrived, self.changed = asyncio.Event(), asyncio.Event()
        self.task = asyncio.create_task(self._run(), name="loraqa-batcher")

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        for ticket in list(self.tickets):
            self.cancel(ticket, ClientGone("the server is shutting down"))
        self.model_thread.shutdown(wait=False, cancel_futures=True)
        self.planner.shutdown(wait=False, cancel_futures=True)

    @property
    def started(self) -> bool:
        return self.task is not None

    @property
    def alive(self) -> bool:
        """False when the scheduling task has died: /health must not say the server answers."""
        return self.task is not None and not self.task.done()

    async def on_model_thread(self, fn, *args):
        """Run fn on the thread that runs the model: between batches, never during one."""
        return await asyncio.get_running_loop().run_in_executor(self.model_thread, functools.partial(fn, *args))

    # ------------------------------------------------------------ a request's path

    async def submit(
        self,
        requests: list[dict],
        request_id: str = "-",
        timeout: float | None = None,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> list[Answer]:
        """Plan (bad input raises here, before queueing), queue the windows, wait for the answers,
        within the request's deadline; `disconnected()` says whether the client went away."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.limits.request_timeout_s)
        readings = await self.plan(requests)
        ticket = self.admit(readings, request_id)
        watch = asyncio.create_task(until_gone(disconnected)) if disconnected else None
        try:
            waiting = {ticket.future} | ({watch} if watch else set())
            done, _ = await asyncio.wait(
                waiting, timeout=max(0.0, deadline - loop.time()), return_when=asyncio.FIRST_COMPLETED
            )
            if ticket.future in done:
                return ticket.future.result()
            if watch is not None and watch in done:
                self.cancel(ticket, ClientGone("the client disconnected"))
                raise ClientGone("the client disconnected")
            timeout_s = timeout or self.limits.request_timeout_s
            self.cancel(ticket, DeadlineExceeded(f"no answer within the server's request timeout ({timeout_s:g} s)"))
            return ticket.future.result()  # raises the deadline error
        finally:
            if watch is not None:
                watch.cancel()
            if not ticket.future.done():  # the caller itself was cancelled
                self.cancel(ticket, ClientGone("the request was cancelled"))

    async def plan(self, requests: list[dict]) -> list[Reading]:
        """The requests' windows, on the planning thread; a request needing more windows than
        limits.max_request_windows is refused as soon as the count passes it."""
        cap = self.limits.max_request_windows

        def work() -> list[Reading]:
            if not hasattr(self.tokenizers, "own"):
                self.tokenizers.own = copy.deepcopy(self.answerer.tokenizer)
            cache: dict = {}  # questions on the same document tokenise it once
            readings, budget = [], cap
            for request in requests:
                try:
                    reading = self.answerer.plan(request, cache, max_windows=budget, tokenizer=self.tokenizers.own)
                except TooMuchWork:
                    raise TooMuchWork(
                        f"this request needs more than {cap} windows (its documents are read in windows "
                        f"of the model's input size); this server reads at most {cap} for one request: "
                        "send fewer questions or shorter documents"
                    ) from None
                budget -= len(reading.inputs)
                readings.append(reading)
            return readings

        return await asyncio.get_running_loop().run_in_executor(self.planner, work)

    def admit(self, readings: list[Reading], request_id: str = "-") -> Ticket:
        names = self.answerer.names
        for reading in readings:  # unloaded while the request was planned: as if never loaded
            if reading.adapter not in names:
                raise AdapterNotFound(f"unknown adapter '{reading.adapter}'; loaded: {', '.join(names)}")
        windows = sum(len(r.inputs) for r in readings)
        if self.queued + windows > self.limits.max_queued_windows:
            raise Overloaded(
                f"the server is busy ({self.queued} windows queued, limit "
                f"{self.limits.max_queued_windows}); retry shortly"
            )
        ticket = Ticket(readings, asyncio.get_running_loop().create_future(), request_id)
        if ticket.total == 0:  # nothing to read (a collection with no passage above its min_score)
            ticket.future.set_result([self.answerer.choose_answer(r) for r in readings])
            return ticket
        self.waiting.append(ticket)
        self.tickets.add(ticket)
        self.queued += ticket.total
        self.arrived.set()
        return ticket

    def cancel(self, ticket: Ticket, exc: BaseException) -> None:
        """Drop the ticket's windows not yet answered and fail it (windows in flight finish unseen)."""
        self.queued -= len(ticket.pending)
        ticket.pending.clear()
        if not ticket.future.done():
            ticket.future.set_exception(exc)
            ticket.future.exception()  # retrieved: its waiter may be gone
        self._settle(ticket)

    # ------------------------------------------------------------ unloading

    def uses(self, adapter: str) -> bool:
        return any(adapter in t.adapters for t in self.tickets)

    async def drained(self, adapter: str) -> None:
        """Wait until no queued or running window uses `adapter`."""
        while self.uses(adapter):
            await self.changed.wait()

    # ------------------------------------------------------------ scheduling

    def _take(self) -> list[tuple[Ticket, Job]]:
        """Up to max_batch windows (and max_batch_tokens padded tokens), one from each waiting
        ticket in turn, each ticket at most its share. A window much longer than the batch's
        longest waits to lead the next batch: padding every short window of the batch to its
        length would cost more than a batch of its own (rows x longest row)."""
        batch: list = []
        longest = 0
        taken: dict = {}
        full: list = []
        deferred: list = []
        while self.waiting and len(batch) < self.max_batch:
            ticket = self.waiting.popleft()
            if not ticket.pending:
                continue  # cancelled while it waited
            reading, i = ticket.pending[0]
            n = len(reading.inputs[i].source)
            if batch and n > LONGER * longest:
                deferred.append(ticket)
                continue
            if batch and max(longest, n) * (len(batch) + 1) > self.max_batch_tokens:
                self.waiting.appendleft(ticket)
                break
            longest = max(longest, n)
            batch.append((ticket, ticket.pending.popleft()))
            ticket.in_flight += 1
            self.queued -= 1
            taken[ticket] = taken.get(ticket, 0) + 1
            if ticket.pending:
                (full if taken[ticket] >= ticket.share else self.waiting).append(ticket)
        self.waiting.extend(full)  # their turn comes again in the next batch
        self.waiting.extendleft(reversed(deferred))  # they lead the next batch
        for ticket in taken:
            ticket.share = min(2 * ticket.share, self.max_batch)
        return batch

    async def _run(self) -> None:
        while True:
            try:
                await self._gather()
                while self.waiting:
                    batch = self._take()
                    if batch:
                        await self._answer(batch)
                        if self.pause_between_batches_s:
                            await asyncio.sleep(self.pause_between_batches_s)
            except asyncio.CancelledError:
                raise
            except Exception:  # the scheduler must outlive anything a batch does
                log.exception("the batcher hit an unexpected error; it goes on with the next batch")

    async def _gather(self) -> None:
        """Wait for windows, then up to window_ms for more to share the batch."""
        await self.arrived.wait()
        self.arrived.clear()
        deadline = time.perf_counter() + self.window
        while self.queued < self.max_batch and (timeout := deadline - time.perf_counter()) > 0:
            try:
                await asyncio.wait_for(self.arrived.wait(), timeout)
                self.arrived.clear()
            except asyncio.TimeoutError:
                break

    async def _answer(self, batch: list[tuple[Ticket, Job]]) -> None:
        groups: dict[Ticket, list[Job]] = {}
        for ticket, job in batch:
            groups.setdefault(ticket, []).append(job)
        for ticket in list(groups):  # an adapter gone while its request waited (the Python API's remove_adapter)
            missing = [a for a in ticket.adapters if not self.answerer.registry.is_attached(a)]
            if missing:
                self._fail(
                    ticket,
                    AdapterNotFound(f"adapter '{missing[0]}' was unloaded before the answer"),
                    len(groups.pop(ticket)),
                )
        if not groups:
            return
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(sum(len(jobs) for jobs in groups.values()))
        try:
            await self.on_model_thread(self._run_and_release, [job for jobs in groups.values() for job in jobs])
            answered = groups
        except Exception as exc:  # noqa: BLE001 - find whose window failed; the others are answered
            answered = await self._answer_apart(groups, exc)
        for ticket, jobs in answered.items():
            ticket.in_flight -= len(jobs)
            ticket.answered += len(jobs)
            if ticket.answered == ticket.total and not ticket.future.done():
                try:
                    ticket.future.set_result([self.answerer.choose_answer(r) for r in ticket.readings])
                except Exception as exc:  # noqa: BLE001 - a bad result fails its own request only
                    ticket.future.set_exception(exc)
            self._settle(ticket)

    def _run_and_release(self, jobs: list[Job]) -> None:
        self.run_fn(jobs)
        self.memory.maybe()  # the batch's activations are freed now (serving/memory.py)

    async def _answer_apart(self, groups: dict[Ticket, list[Job]], exc: Exception) -> dict[Ticket, list[Job]]:
        """The batch failed: answer each request's windows alone, so only the request whose window
        fails gets the error."""
        if len(groups) == 1:
            [(ticket, jobs)] = groups.items()
            self._fail(ticket, exc, len(jobs))
            return {}
        answered = {}
        for ticket, jobs in groups.items():
            try:
                await self.on_model_thread(self.run_fn, jobs)
                answered[ticket] = jobs
            except Exception as own:  # noqa: BLE001 - fails this request only
                self._fail(ticket, own, len(jobs))
        return answered

    def _fail(self, ticket: Ticket, exc: BaseException, windows: int) -> None:
        ticket.in_flight -= windows
        self.cancel(ticket, exc)

    def _settle(self, ticket: Ticket) -> None:
        if ticket.finished:
            self.tickets.discard(ticket)
        self.changed.set()
        self.changed = asyncio.Event()
