"""BM25 of a few candidate passages, computed here with the same formula and statistics as FTS5's
bm25() (k1 1.2, b 0.75, the column weights, the collection's row count and token totals, each
word's document frequency from the index itself).

Why not FTS5's own bm25() over the candidates: it counts, for every scan it ranks, how many rows
hold each word of the query, walking each word's whole list of rows; and FTS5 cannot restrict an
OR query to a list of rowids before walking it. With a common word in the query that made one
search of 100,000 real passages take 0.3-2 s however few candidates were kept (measured on
COVID-QA's sentences, benchmarks/domains.py). Here each word's frequency is counted once per
collection state and kept, and only the candidates' own words are read.
"""

from __future__ import annotations

import math
import re
import sqlite3
import unicodedata
from collections import Counter

import Stemmer

K1, B = 1.2, 0.75
# FTS5's unicode61 tokenizer: letters and digits make words, everything else (underscore too)
# separates them
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
# FTS5's porter tokenizer implements Porter's original algorithm, as Snowball's "porter" does
# (PyStemmer, C; measured on COVID-QA's 20,360 words: the index's form for all but 52 ending in
# -logy, which are stemmed alike on both sides here, so they still count). NLTK's copy of the
# algorithm stems the same but takes 1.3 s to import, too much for a server's cold start.
_STEMMER = Stemmer.Stemmer("porter")


# the combining marks NFKD splits off letters (Unicode's combining diacritical blocks)
_COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_STEMS: dict[str, str] = {}  # a plain dict: looked up for every word of every candidate


def plain(text: str) -> str:
    """Lower case without diacritics, as the index's remove_diacritics option reads text."""
    text = text.lower()
    if text.isascii():
        return text
    return _COMBINING.sub("", unicodedata.normalize("NFKD", text)).lower()


def stem(word: str) -> str:
    """The index's form of a word."""
    key = _STEMS.get(word)
    if key is None:
        key = _STEMMER.stemWord(plain(word))
        if len(_STEMS) > 500_000:
            _STEMS.clear()
        _STEMS[word] = key
    return key


def _prefix(key: str) -> str:
    """What every word with this stem starts with: Porter's algorithm only rewrites a word's
    ending, and a final y becomes i ("says" -> "sai"), so a stem longer than 3 letters keeps the
    word's first 3, a shorter one its first 2."""
    return key[:3] if len(key) > 3 else key[:2]


def frequency_finder(keys: set[str]):
    """A function counting how often each of `keys` occurs in a text (as the index's forms): only
    the words that start like one of them are stemmed (a few per passage, not all of them)."""
    starts = sorted({_prefix(k) for k in keys if k}, key=len, reverse=True)
    pattern = re.compile(r"(?<![^\W_])(?:" + "|".join(re.escape(p) for p in starts) + r")[^\W_]*") if starts else None

    def find(text: str) -> Counter:
        found: Counter = Counter()
        if pattern is not None:
            for word in pattern.findall(plain(text)):
                key = stem(word)
                if key in keys:
                    found[key] += 1
        return found
    return find


def _varint(data: bytes, i: int) -> tuple[int, int]:
    """SQLite's variable-length integer, as FTS5 writes its records."""
    value = 0
    for n in range(9):
        byte = data[i]
        i += 1
        if n == 8:
            return (value << 8) | byte, i
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, i
    raise ValueError("bad varint")  # unreachable: the loop returns by its ninth byte


def averages(conn: sqlite3.Connection, table: str) -> tuple[int, list[int]]:
    """(rows, tokens in each column) from FTS5's averages record (the row with id 1 of its data
    table: a varint row count, then one varint token total per column), which bm25() reads too."""
    row = conn.execute(f"SELECT block FROM {table}_data WHERE id = 1").fetchone()
    if row is None:  # nothing committed yet
        return 0, []
    data, i, values = bytes(row[0]), 0, []
    while i < len(data):
        value, i = _varint(data, i)
        values.append(value)
    return values[0], values[1:]


def sizes(conn: sqlite3.Connection, table: str, rowids: list[int]) -> dict[int, int]:
    """Each row's token count over all its columns, from FTS5's docsize table (one varint per
    column), which bm25() reads too."""
    out = {}
    query = f"SELECT id, sz FROM {table}_docsize WHERE id IN ({','.join(str(int(r)) for r in rowids)})"
    for rowid, blob in conn.execute(query):
        data, i, total = bytes(blob), 0, 0
        while i < len(data):
            value, i = _varint(data, i)
            total += value
        out[rowid] = total
    return out


class Scorer:
    """Document frequencies of words in one FTS5 table, counted once per state of the table
    (its row and token totals change with every write)."""

    def __init__(self, table: str, weights: tuple[float, ...]):
        self.table, self.weights = table, weights
        self._state: tuple = ()
        self._df: dict[str, int] = {}

    def _frequency(self, conn: sqlite3.Connection, word: str) -> int:
        if word not in self._df:
            if len(self._df) > 50_000:
                self._df.clear()
            self._df[word] = conn.execute(f"SELECT count(*) FROM {self.table} WHERE {self.table} MATCH ?",
                                          (f'"{word}"',)).fetchone()[0]
        return self._df[word]

    def scores(self, conn: sqlite3.Connection, words: list[str],
               candidates: list[tuple[int, tuple[str, ...]]]) -> dict[int, float]:
        """BM25 of each candidate (rowid, its column texts) for the query's words (higher is better,
        the negative of what bm25() returns)."""
        rows, column_tokens = averages(conn, self.table)
        state = (rows, tuple(column_tokens))
        if state != self._state:
            self._state, self._df = state, {}
        if rows == 0:
            return {}
        avgdl = sum(column_tokens) / rows
        idf: dict[str, float] = {}
        for word in words:
            key = stem(word.lower())
            if key and key not in idf:
                hits = self._frequency(conn, word)
                idf[key] = max(math.log((rows - hits + 0.5) / (hits + 0.5)), 1e-6)
        find = frequency_finder(set(idf))
        lengths = sizes(conn, self.table, [rowid for rowid, _ in candidates])
        out = {}
        for rowid, columns in candidates:
            counts = [find(text or "") for text in columns]
            norm = K1 * (1 - B + B * lengths.get(rowid, 0) / avgdl)
            score = 0.0
            for key, weight in idf.items():
                freq = sum(w * c[key] for w, c in zip(self.weights, counts))
                score += weight * freq * (K1 + 1) / (freq + norm)
            out[rowid] = score
        return out
