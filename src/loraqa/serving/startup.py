"""How long the process took to become ready, said once on stderr (stdout may be MCP's channel).

Start-up is what an adapter loaded on demand, an MCP server a host starts for each session, or a
short `loraqa predict` pays every time, so the servers say it."""

from __future__ import annotations

import os
import time

from loraqa.reporting import say

_IMPORTED = time.monotonic()


def seconds_since_start() -> float:
    """Seconds since this process started (Linux: from /proc; elsewhere since loraqa's servers were imported)."""
    try:
        with open("/proc/self/stat") as f:
            started_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, after the command name
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(uptime - started_ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


def say_ready(answerer, what: str) -> None:
    """On the loraqa.progress logger: the command line shows it on stderr."""
    adapters = ", ".join(answerer.registry.adapters) or "no adapter yet"
    say(
        f"{what} ready {seconds_since_start():.1f} s after start ({adapters}; engine {answerer.engine.kind}, "
        f"{answerer.dtype})"
    )
