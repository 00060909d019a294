"""The one exception the library raises for problems a user can fix.

The CLI turns it into `error: <message>` and exit code 1, with no traceback.
"""


class LoraqaError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""

    exit_code = 1


class UsageError(LoraqaError):
    """The command line or configuration asks for something invalid (exit code 2, like argparse)."""

    exit_code = 2


class ConfigError(UsageError):
    """One or more configuration problems, each with its fix."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))
