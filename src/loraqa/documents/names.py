"""File names and texts as they may be stored and printed.

A file name is bytes on Linux: one that is not UTF-8 reaches Python with lone surrogates
(which neither SQLite nor a terminal accepts), and one may hold a newline or a terminal escape
code (which would split a one-line error or reach the terminal raw). Such characters are written
as Python's `repr` writes them (`\\udcff`, `\\n`, `\\x1b`); every other character stays as it is.
"""

from __future__ import annotations

import re
from pathlib import Path

# C0 and C1 controls, DEL, and lone surrogates (undecodable bytes of a file name, or a JSON
# "\\ud800" escape)
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL_BUT_LAYOUT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def shown(path: str | Path) -> str:
    """A path (or any name) printable on one line and storable as UTF-8."""
    return _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], str(path))


def storable(text: str) -> str:
    """Text safe for every store: lone surrogates become U+FFFD, NUL is dropped (PostgreSQL
    refuses both; SQLite refuses the first)."""
    return _SURROGATE.sub("\ufffd", text).replace("\x00", "")


def one_line(text: str) -> str:
    """A title or heading: storable, control characters dropped, whitespace runs made one space."""
    return " ".join(_CONTROL_BUT_LAYOUT.sub("", storable(text)).split())


def without_surrogates(value):
    """A JSON value with every lone surrogate in its strings (and keys) replaced by U+FFFD, one
    character for one, so offsets into its texts still hold."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [without_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {without_surrogates(k): without_surrogates(v) for k, v in value.items()}
    return value


def storable_value(value, depth: int = 0):
    """A JSON value (metadata) with every string storable; depth is bounded by the JSON parser."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, list):
        return [storable_value(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {storable(str(k)): storable_value(v, depth + 1) for k, v in value.items()}
    return value
