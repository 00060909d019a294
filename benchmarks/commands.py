"""loraqa's commands as the benchmark scripts run them: each in its own process, or, for a
smoke run, in the script's own."""

from __future__ import annotations

import signal
import subprocess
import sys


def _stop_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


# A smoke run (--quick) calls loraqa's commands in this process: importing torch and
# transformers is most of a tiny run's time, paid once here instead of once per command. A
# measurement runs each in its own process, so that its time and memory are the command's alone.
IN_PROCESS = False


def loraqa(*args: str, stderr=None) -> None:
    """`python -m loraqa ARGS`, stopped with this script: subprocess.run kills its child on any
    exception (Ctrl-C included), and a plain `kill` of the script is made one here (by default
    SIGTERM ends the script at once and leaves a training run going on in the background)."""
    if IN_PROCESS:
        loraqa_here(*args, quiet=stderr == subprocess.DEVNULL)
        return
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    subprocess.run([sys.executable, "-m", "loraqa", *args], check=True, stdout=subprocess.DEVNULL, stderr=stderr)


def loraqa_here(*args: str, quiet: bool = False) -> None:
    """The same command in this process, its output dropped; a failure raises as it would exit."""
    import contextlib
    import io

    from loraqa.cli import app

    with contextlib.redirect_stdout(io.StringIO()), contextlib.ExitStack() as stack:
        if quiet:
            stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        code = app(list(args), standalone_mode=False)
    if code:  # typer.Exit(n) comes back as n when click does not exit for us
        raise subprocess.CalledProcessError(code, ["loraqa", *args])
