"""Hand freed activation memory back to the operating system between CPU training steps.

glibc's malloc raises its mmap threshold after large frees, so a step's activations end up on
the heap, and what one batch shape frees is only partly reusable by the next: resident memory
creeps up by most of a step's activations (measured: 2.2 -> 3.1 GiB over four default-preset
steps at 16 x 384 tokens while live tensors stayed the same). `malloc_trim` returns the free
pages after each optimizer step (measured: peak 2.6 GiB, no measurable slowdown), which a
fixed mmap threshold also does but at twice the step time (every allocation page-faults).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

from transformers import TrainerCallback


def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # musl or another libc without it
        return None


class ReturnFreedMemory(TrainerCallback):
    def __init__(self):
        self.trim = _malloc_trim()

    def on_step_end(self, args, state, control, **kwargs):
        if self.trim is not None:
            self.trim(0)
