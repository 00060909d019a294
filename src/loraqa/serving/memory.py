"""Giving freed memory back to the system between batches.

A server's batches differ in rows and lengths, so their activations are freed in blocks of many
sizes, and glibc keeps the freed blocks in its heaps: resident memory creeps up to the sum of
the shapes seen, not the largest batch. malloc_trim hands the free pages back. Measured on 60
varied batches over 8 adapters (flan-t5-small): resident 1,136 MB without, 792 MB with, at about
5 ms a call. Python and PyTorch offer no such call, hence ctypes; elsewhere than glibc it does
nothing.
"""

from __future__ import annotations

import ctypes
import functools
import time

EVERY_S = 1.0  # at most once a second: a call costs a few ms


@functools.lru_cache(maxsize=1)
def _trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not Linux with glibc
        return None


class MemoryReleaser:
    """Call `maybe()` on the model thread after a batch."""

    def __init__(self, every_s: float = EVERY_S):
        self.every_s, self.last = every_s, 0.0

    def maybe(self) -> None:
        trim = _trim()
        now = time.monotonic()
        if trim is not None and now - self.last >= self.every_s:
            trim(0)
            self.last = time.monotonic()
