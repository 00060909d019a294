"""Snippets: the text of a hit around the query's words, each marked «like this», made for the
hits a search returns only (FTS5's snippet() would be computed for every matching passage)."""

from __future__ import annotations

import re

from loraqa.retrieval.store import Hit, content_words

_SNIPPET_CHARS = 240


def with_snippets(hits: list[Hit], query: str) -> list[Hit]:
    """Hits that have no snippet (dense ones) get one: the text around the first query word
    found, each query word marked «like this» as FTS5's snippets are."""
    words = [w for w in content_words(query) if len(w) > 2]
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\w*", re.IGNORECASE) if words else None
    for hit in hits:
        if hit.snippet:
            continue
        text = hit.text
        m = pattern.search(text) if pattern else None
        start = max(0, (m.start() if m else 0) - _SNIPPET_CHARS // 3)
        piece = text[start : start + _SNIPPET_CHARS]
        if pattern:
            piece = pattern.sub(lambda x: f"«{x.group()}»", piece)
        hit.snippet = ("... " if start else "") + piece + (" ..." if start + _SNIPPET_CHARS < len(text) else "")
    return hits
