"""Run under torchrun by tests/test_distributed.py: shares a list between the processes, then
loads model classes as eval does (after the process group started), leaves a trained
DistributedDataParallel wrapper in a reference cycle as training does, and records at exit whether
the process group, or the gloo threads it runs, were still alive after loraqa's own exit hook ran.

Threads still running at interpreter teardown are what abort a finished process now and then."""

import atexit
import json
import os
import sys
from pathlib import Path

import torch.distributed as dist

out = Path(sys.argv[1])


def gloo_threads() -> list[str] | None:
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():  # not Linux: the threads cannot be listed
        return None
    return sorted(n for t in tasks.iterdir() if "gloo" in (n := (t / "comm").read_text().strip()))


@atexit.register  # registered before loraqa's hook, so it runs after it (atexit runs last-in first)
def record() -> None:
    alive = {"group": dist.is_initialized(), "gloo_threads": gloo_threads()}
    (out / f"rank{os.environ['RANK']}.json").write_text(json.dumps(alive))


# imported only now, on purpose: its exit hook must be registered after the one above
from loraqa.distributed import in_shares  # noqa: E402

doubled, shares = in_shares(lambda xs: [2 * x for x in xs], list(range(10)))
assert doubled == [2 * x for x in range(10)] and shares == [5, 5], (doubled, shares)

# eval first loads its model classes once the group exists; so does this
import torch  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402
from transformers import T5Config, T5ForConditionalGeneration  # noqa: E402

model = T5ForConditionalGeneration(T5Config(d_model=8, d_ff=8, num_layers=1, num_heads=1, d_kv=8, vocab_size=16))

# training leaves its DistributedDataParallel wrapper (which holds the group) in a reference cycle
wrapped = DistributedDataParallel(torch.nn.Linear(4, 4))
wrapped(torch.ones(2, 4)).sum().backward()
cycle: dict = {"wrapper": wrapped}
cycle["self"] = cycle
del wrapped, cycle
