"""What the command line shows of the library's logging: its progress lines as they are, and
every other warning prefixed `warning:`."""

from __future__ import annotations

import logging
import sys


class CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line comes: a progress bar that redirects stderr
    (Rich's) keeps its display whole, and a test runner capturing stderr sees the lines."""

    @property  # type: ignore[override]  # the handler's stream attribute, made to follow sys.stderr
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def show_progress_lines() -> None:
    """The `loraqa.progress` lines on stderr, once however many commands run in this process."""
    log = logging.getLogger("loraqa.progress")
    if not any(isinstance(h, CurrentStderr) for h in log.handlers):
        handler = CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # not also as "warning: ..." through the root logger
