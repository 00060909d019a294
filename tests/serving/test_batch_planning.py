"""How the server's batcher cuts waiting requests into model calls (serving/batching.py `_take`),
without a model or a server: requests are admitted and batches taken by hand.

What a user would see go wrong: a short question stuck behind another client's 500-window
document, a request with many questions getting more turns than one with a single question,
a batch padded to one very long window (each short window then costs as much as the long one),
a batch over the token budget taking seconds that everyone arriving meanwhile waits for."""

from __future__ import annotations

import asyncio

from loraqa.inference.reading import Reading, WindowInput
from loraqa.serving.batching import Batcher


class Names:
    """The part of the Answerer the batcher asks when it admits a request."""

    names = ("a", "b")

    def run(self, jobs):
        raise AssertionError("no model call in these tests")


def reading(windows: int, length: int = 10, adapter: str = "a") -> Reading:
    return Reading(adapter, [WindowInput([1] * length, None, None) for _ in range(windows)], 8, None)


def batches(max_batch=8, max_batch_tokens=10_000, *requests):
    """Each batch as a list of request indexes, one per window, until every window is taken."""

    async def run():
        batcher = Batcher(Names(), max_batch=max_batch, max_batch_tokens=max_batch_tokens)
        batcher.arrived = asyncio.Event()
        tickets = [batcher.admit(readings) for readings in requests]
        out = []
        while batcher.waiting:
            out.append([tickets.index(t) for t, _ in batcher._take()])
        batcher.model_thread.shutdown(wait=False)
        batcher.planner.shutdown(wait=False)
        return out

    return asyncio.run(run())


def test_a_short_request_joins_the_next_batch_beside_a_long_document():
    taken = batches(8, 10_000, [reading(500)], [reading(1)])
    assert 1 in taken[0]  # the one-window question is answered with the document's first windows
    assert sum(len(b) for b in taken) == 501 and all(len(b) <= 8 for b in taken)


def test_a_new_request_starts_with_two_windows_and_doubles_its_share():
    taken = batches(32, 100_000, [reading(100)])
    assert [len(b) for b in taken[:5]] == [2, 4, 8, 16, 32]


def test_many_questions_get_the_turns_of_one_request_not_one_each():
    many = [reading(20) for _ in range(4)]  # 4 questions of 20 windows
    taken = batches(8, 100_000, many, [reading(80)])
    first_batches = [b for b in taken[2:6]]  # once both have grown to their full share
    for b in first_batches:
        assert abs(b.count(0) - b.count(1)) <= 1, taken[:6]  # the batch split evenly between the two requests


def test_a_much_longer_window_waits_to_lead_the_next_batch():
    short, long_ = reading(4, length=20), reading(1, length=200)
    taken = batches(8, 100_000, [short], [long_], [reading(4, length=20)])
    assert 1 not in taken[0] and taken[1][0] == 1  # not padded into the short batch: first in the next


def test_a_batch_stops_at_its_token_budget():
    async def run():
        batcher = Batcher(Names(), max_batch=32, max_batch_tokens=1000)
        batcher.arrived = asyncio.Event()
        for _ in range(10):
            batcher.admit([reading(2, length=100)])
        sizes = []
        while batcher.waiting:
            batch = batcher._take()
            sizes.append(len(batch) * max(len(r.inputs[i].source) for _, (r, i) in batch))
        batcher.model_thread.shutdown(wait=False)
        batcher.planner.shutdown(wait=False)
        return sizes

    assert all(padded <= 1000 for padded in asyncio.run(run()))
