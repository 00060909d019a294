"""How library code tells its user what it is doing: plain lines on the `loraqa.progress` logger.

The command line shows them on stderr as they come (cli/logs.py); a Python caller sees them
wherever its own logging sends them, and nothing by default. Progress bars belong to the caller:
long library calls take a `progress` callback instead of drawing one.
"""

from __future__ import annotations

import logging

log = logging.getLogger("loraqa.progress")


def say(message: str) -> None:
    log.info(message)
