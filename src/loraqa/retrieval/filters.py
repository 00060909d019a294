"""Searching within part of a collection: `--where FIELD=VALUE` (all must hold), or a request's
`"filters": {"source": "policies/acme*", "page": "3-5"}`.

Fields: `document` (its id; repeatable: any of them), `source` and `title` (a glob: `*` any
run of characters, `?` one), `page` (`N` or `N-M`), `meta.KEY` (a JSONL document's field,
exact, compared as text). Each store turns a Filter into a condition on its passages, so a
filtered search returns the best k passages *within* the filter, in every mode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from loraqa.errors import UsageError

FIELDS = ("document", "source", "title", "page", "meta.KEY")
_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class Filter:
    documents: tuple[str, ...] = ()
    source: str | None = None
    title: str | None = None
    pages: tuple[int, int] | None = None
    meta: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, items: list[str] | None) -> Filter | None:
        """From FIELD=VALUE strings (None when there are none)."""
        if not items:
            return None
        return cls.of(dict_pairs(items))

    @classmethod
    def of(cls, given: dict | list | None) -> Filter | None:
        """From {field: value} (a value may be a list for `document`), as a request sends it."""
        if not given:
            return None
        pairs = given.items() if isinstance(given, dict) else given
        documents, source, title, pages, meta = [], None, None, None, []
        for field, value in pairs:
            values = value if isinstance(value, list) and field == "document" else [value]
            if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
                raise UsageError(f"filter {field}: give text (or a list of ids for document)")
            values = [str(v) for v in values]
            if field == "document":
                documents += values
            elif field == "source":
                source = values[0]
            elif field == "title":
                title = values[0]
            elif field == "page":
                m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", values[0])
                if not m:
                    raise UsageError(f"filter page={values[0]!r}: give a page N or a range N-M")
                lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
                pages = (min(lo, hi), max(lo, hi))
            elif field.startswith("meta.") and _KEY.fullmatch(field[5:]):
                meta.append((field[5:], values[0]))
            else:
                raise UsageError(f"unknown filter field '{str(field)[:40]}'; filter on {', '.join(FIELDS)}")
        return cls(tuple(documents), source, title, pages, tuple(meta))


def dict_pairs(items: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        field, sep, value = item.partition("=")
        if not sep or not field.strip():
            raise UsageError(f"--where '{item}' must be FIELD=VALUE (fields: {', '.join(FIELDS)})")
        pairs.append((field.strip(), value))
    return pairs


def glob_to_like(pattern: str) -> str:
    """A glob (* and ?) as an SQL LIKE pattern, with LIKE's own wildcards escaped (by '\\')."""
    out = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return out.replace("*", "%").replace("?", "_")
