"""Run under torchrun by tests/test_distributed.py: shares a list between the processes, then
records, at exit, whether the process group was still alive after loraqa's own exit hook ran."""

import atexit
import json
import os
import sys
from pathlib import Path

import torch.distributed as dist

out = Path(sys.argv[1])


@atexit.register  # registered before loraqa's hook, so it runs after it (atexit runs last-in first)
def record() -> None:
    (out / f"rank{os.environ['RANK']}.json").write_text(json.dumps({"alive_at_exit": dist.is_initialized()}))


# imported only now, on purpose: its exit hook must be registered after the one above
from loraqa.distributed import in_shares  # noqa: E402

doubled, shares = in_shares(lambda xs: [2 * x for x in xs], list(range(10)))
assert doubled == [2 * x for x in range(10)] and shares == [5, 5], (doubled, shares)
