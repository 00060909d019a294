"""Every error type loraqa raises for problems a user can fix.

One base class. The CLI turns any of them into `error: <message>` and the type's exit code,
with no traceback; the HTTP server answers with the type's status code. Which code applies is
decided by the type, never by the words of the message.

Library messages never name a command-line flag: the Python API and the HTTP server have none.
Where a message tells the user which setting fixes the problem, it names the setting with
`option("model")`; `str(error)` shows the setting as the Python API and config know it
(`model.name`), and the CLI shows its flag (`--model PATH`) through `cli_message()`.
"""

from __future__ import annotations

import re

# A private-use code point pair that no message text contains: marks a setting inside a message.
_OPEN, _CLOSE = "\ue000", "\ue001"
_MARK = re.compile(f"{_OPEN}([^{_CLOSE}]*){_CLOSE}")

# setting -> (how the CLI spells it, how the Python API / config spells it)
OPTIONS = {
    "model": ("--model PATH", "model.name (Answerer: base_model=)"),
    "data": ("--data PATH", "data.source"),
    "output": ("--output DIR", "output="),
    "overwrite": ("--overwrite", "overwrite=True"),
    "resume": ("--resume", "resume=True"),
    "config": ("--config FILE", "config_file="),
    "allow_pickle": ("--allow-pickle", "allow_pickle=True"),
    "engine": ("--engine", "engine="),
    "format": ("--format", "fmt="),
    "quantization": ("--quantization", "quantization="),
    "question": ("--question", "question="),
    "context": ("--context", "context="),
    "describe": ("--describe", "descriptions="),
    "baseline": ("--baseline", "baseline=True"),
    "keys": ("`loraqa config --keys`", "loraqa.config.key_help()"),
    "max_file_mb": ("--max-file-mb", "max_file_mb="),
    "store": ("--store", "store="),
    "retrieve": ("--retrieve", "retrieve=True"),
    "similarity_model": ("--similarity-model PATH", "similarity_model="),
}


def option(name: str) -> str:
    """Mark the setting `name` (a key of OPTIONS) inside a message."""
    if name not in OPTIONS:
        raise KeyError(f"unknown option {name}")
    return f"{_OPEN}{name}{_CLOSE}"


def setting(assignment: str) -> str:
    """Mark a config assignment such as 'train.batch_size=8': `--set train.batch_size=8` on the
    command line, the assignment itself in the Python API (load_config(sets=[...]))."""
    return f"{_OPEN}={assignment}{_CLOSE}"


def render(message: str, cli: bool) -> str:
    def one(match: re.Match) -> str:
        name = match.group(1)
        if name.startswith("="):
            return f"--set {name[1:]}" if cli else name[1:]
        return OPTIONS[name][0 if cli else 1]

    return _MARK.sub(one, message)


class LoraqaError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""

    exit_code = 1
    http_status = 400
    # what the user does about it, in a sentence: listed with every error type in the documentation
    # (docs/reference/errors.md); the message itself says it for the case at hand
    remedy = "Read the message: it names the setting, file or flag to change."

    @property
    def template(self) -> str:
        """The message with its settings still marked: wrap it in another error's message."""
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return render(self.template, cli=False)

    def cli_message(self) -> str:
        return render(self.template, cli=True)


class UsageError(LoraqaError):
    """The command line or configuration asks for something invalid (exit code 2, like argparse)."""

    remedy = "Fix the flag or value the message names; `loraqa COMMAND --help` lists them."

    exit_code = 2


class ConfigError(UsageError):
    """One or more configuration problems, each with its fix."""

    remedy = "Fix each key it lists (`loraqa config --keys` says what each means), then run again."

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class AdapterNotFound(LoraqaError):
    """A request names an adapter that is not loaded."""

    remedy = "List the server's adapters (`GET /v1/adapters`, `/v1/models`) and use one of their names."

    http_status = 404


class NotAnAdapter(LoraqaError):
    """A path given as an adapter does not exist, or holds no adapter folder."""

    remedy = "Pass a run directory whose training finished (runs/NAME) or its adapter/ folder."


class AdapterExists(LoraqaError):
    """An adapter is loaded under a name that is already taken, or no more adapters may be loaded."""

    remedy = "Unload the adapter of that name first, pick another name, or raise --max-adapters."

    http_status = 409


class Interrupted(LoraqaError):
    """Ctrl-C during training: a checkpoint was saved; the message says how to resume."""

    remedy = "Run the command the message prints (`loraqa train --output RUN --resume`)."

    exit_code = 130


class MissingDependency(LoraqaError):
    """An optional package a feature needs is not installed; the message names the pip extra."""

    remedy = "Install the extra the message names (`pip install 'loraqa[EXTRA]'`)."


class UnknownCollection(UsageError):
    """A collection that is not in the store."""

    remedy = "Make it with `loraqa collection add NAME PATHS`, or list them with `loraqa collection list`."

    http_status = 404


class EmptyDocument(UsageError):
    """A question came with a passage that is empty or only whitespace."""

    remedy = "Send the passage's text, or leave the context out to answer from a collection."

    http_status = 422


class QuestionTooLong(LoraqaError):
    """The question and instruction fill the source window, leaving no room for the passage."""

    remedy = "Shorten the question, or use a preset with a longer window (data.max_source_length)."

    http_status = 413


class QueryTooLong(LoraqaError):
    """A search query over the store's query limits (characters or words)."""

    remedy = "Shorten the query, or raise the server's --max-query-chars / --max-query-words."

    http_status = 413


class TooMuchWork(LoraqaError):
    """One request asks for more windows (or questions) than a server lets one request have."""

    remedy = "Send fewer or shorter documents per request, or raise the server's --max-request-windows."

    http_status = 413


class Overloaded(LoraqaError):
    """The server's queue of windows is full: retry later (the response says when)."""

    remedy = "Retry after the Retry-After header's seconds; an operator may raise --max-queued-windows."

    http_status = 503
    retry_after = 1


class DeadlineExceeded(LoraqaError):
    """A request was not answered within the server's request timeout; its work was dropped."""

    remedy = "Retry with a shorter document, or raise the server's --request-timeout."

    http_status = 504
