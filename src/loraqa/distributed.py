"""Runs under torchrun / `accelerate launch`: which process writes, and answering in shares (each
process reads its share of the questions and every process gets all answers back, in order).

Accelerate's PartialState reads the launcher's environment (RANK, WORLD_SIZE, MASTER_ADDR...)
and starts the process group (gloo on CPU, nccl on GPU); in one plain process it is a no-op,
so callers need no second code path."""

from __future__ import annotations

import atexit
import gc
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from accelerate import PartialState
from accelerate.utils import gather_object

T = TypeVar("T")
R = TypeVar("R")


def processes() -> PartialState:
    # cpu=True lets a CPU-only launch form a gloo group (accelerate only does so when asked, as the
    # Trainer asks with use_cpu); the state is shared, so whoever starts it first decides
    return PartialState(cpu=not torch.cuda.is_available())


def _import_group_holders() -> None:
    """Import, before the process group starts, the torch module that would otherwise hold it.

    torch's ShardedGradScaler takes `process_group=dist.group.WORLD` as a default argument, which is
    evaluated when its module is imported. transformers imports that module with its model classes,
    which eval loads after the group has started: the default then keeps the group alive for good,
    destroy_process_group cannot free it, its gloo threads run on into interpreter teardown, and now
    and then a finished process aborts there (SIGABRT, "terminate called without an active
    exception") so torchrun reports the eval failed. Imported first, the default is None. Done
    when this module is imported under a launcher: every loraqa path imports it before any group
    starts (eval before it starts one itself, training before the Trainer does)."""
    import torch.distributed.fsdp.sharded_grad_scaler  # noqa: F401 - imported for its side effect


if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    _import_group_holders()


@atexit.register
def _end_process_group() -> None:
    """Destroy the process group (whoever started it: this module or the Trainer) before the
    interpreter shuts down. Registered on import: every loraqa path that runs under a launcher
    imports this module (eval through eval_run, training through its EM/F1 hook).

    A gloo group still alive at shutdown aborts its process ("terminate called without an active
    exception", SIGABRT) in about one launch in six on a 2-core machine: the work is done and
    written, yet torchrun reports the command failed. Measured with two processes that gather a
    list: 2 aborts in 12 launches without this, 0 in 24 with it. Destroying it ends its threads
    only once nothing else holds it (see _import_group_holders, and the collection below); the
    exit test checks the threads are gone. Nothing waits for the other processes here, so a
    process that failed still exits at once and torchrun stops the rest."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # the Trainer's DistributedDataParallel wrapper outlives training in a reference cycle and
        # holds the group: collected first, the group's threads end with it instead of at teardown
        gc.collect()
        torch.distributed.destroy_process_group()


def is_main_process() -> bool:
    """Global rank 0 of a torchrun / accelerate launch, or a plain single process: the only writer.

    The process group's rank once it exists (accelerate's `is_main_process` is the same test);
    before that the launcher's RANK, which the group is later started from. Asking does not start
    a process group: training asks before the Trainer starts its own."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def process_device(device: str) -> str:
    """Each process on its own GPU (cuda:LOCAL_RANK) under a launcher; otherwise unchanged."""
    state = processes()
    if state.num_processes > 1 and device in ("auto", "cuda") and state.device.type == "cuda":
        return str(state.device)
    return device


def in_shares(work: Callable[[list[T]], list[R]], items: Sequence[T]) -> tuple[list[R], list[int]]:
    """`work` on this process's contiguous share of `items`; all results gathered in the items'
    order, and how many items each process handled (rank order)."""
    state = processes()
    if state.num_processes == 1:
        return work(list(items)), [len(items)]
    with state.split_between_processes(list(items)) as mine:
        mine = list(mine)
    results = work(mine)
    if len(results) != len(mine):
        raise RuntimeError(f"expected {len(mine)} results, got {len(results)}")
    # gather_object concatenates the per-process lists in rank order: the shares were contiguous
    return gather_object(results), gather_object([len(mine)])
