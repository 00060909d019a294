"""Every error type loraqa raises for problems a user can fix.

One base class. The CLI turns any of them into `error: <message>` and the type's exit code,
with no traceback; the HTTP server answers with the type's status code. Which code applies is
decided by the type, never by the words of the message.
"""


class LoraqaError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""

    exit_code = 1
    http_status = 400


class UsageError(LoraqaError):
    """The command line or configuration asks for something invalid (exit code 2, like argparse)."""

    exit_code = 2


class ConfigError(UsageError):
    """One or more configuration problems, each with its fix."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class AdapterNotFound(LoraqaError):
    """A request names an adapter that is not loaded."""

    http_status = 404


class AdapterExists(LoraqaError):
    """An adapter is loaded under a name that is already taken."""

    http_status = 409


class Interrupted(LoraqaError):
    """Ctrl-C during training: a checkpoint was saved; the message says how to resume."""

    exit_code = 130


class MissingDependency(LoraqaError):
    """An optional package a feature needs is not installed; the message names the pip extra."""


class EmptyDocument(UsageError):
    """A question came with a passage that is empty or only whitespace."""

    http_status = 422


class QuestionTooLong(LoraqaError):
    """The question and instruction fill the source window, leaving no room for the passage."""

    http_status = 413
