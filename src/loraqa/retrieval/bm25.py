"""What FTS5's bm25() works from, read outside FTS5: its parameters (k1 1.2, b 0.75), the index's
form of a word (porter unicode61 remove_diacritics 2) and the table's row and token totals.
retrieval/postings.py scores with them.
"""

from __future__ import annotations

import re
import sqlite3
import unicodedata

import Stemmer

K1, B = 1.2, 0.75
# FTS5's porter tokenizer implements Porter's original algorithm, as Snowball's "porter" does
# (PyStemmer, C; measured on COVID-QA's 20,360 words: the index's form for all but 52 ending in
# -logy, -bly or under three letters, which stem() treats as FTS5 does). NLTK's copy of the
# algorithm stems the same but takes 1.3 s to import, too much for a server's cold start.
_STEMMER = Stemmer.Stemmer("porter")


# the combining marks NFKD splits off letters (Unicode's combining diacritical blocks)
_COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_STEMS: dict[str, str] = {}  # words already stemmed (a server sees the same words again and again)


def plain(text: str) -> str:
    """Lower case without diacritics, as the index's remove_diacritics option reads text."""
    text = text.lower()
    if text.isascii():
        return text
    return _COMBINING.sub("", unicodedata.normalize("NFKD", text)).lower()


def _measure(stem: str) -> int:
    """Porter's m: how many vowel-consonant sequences the stem has (y is a vowel after a consonant)."""
    kinds, previous = "", "v"  # a leading y is a consonant
    for letter in stem:
        previous = "v" if letter in "aeiou" or (letter == "y" and previous == "c") else "c"
        kinds += previous
    return kinds.count("vc")


# Step 2 of the revised Porter algorithm, which FTS5's porter follows and Snowball's original lacks:
# (m>0) BLI -> BLE and (m>0) LOGI -> LOG, on the word as step 1 leaves it ("possibly" ->
# "possibli", "technologies" -> "technologi"). The word is rewritten so that the stemmer's later
# steps then run on what FTS5's would see.
_REVISED = (("blies", "ble"), ("bly", "ble"), ("logies", "log"), ("logy", "log"))


def _fts5_form(word: str) -> str:
    if len(word) < 3:  # FTS5's porter leaves tokens under 3 characters as they are
        return word
    for ending, replacement in _REVISED:
        if word.endswith(ending) and _measure(word[: -len(ending)]) > 0:
            return _STEMMER.stemWord(word[: -len(ending)] + replacement)
    return _STEMMER.stemWord(word)


def stem(word: str) -> str:
    """The index's form of a word."""
    key = _STEMS.get(word)
    if key is None:
        key = _fts5_form(plain(word))
        if len(_STEMS) > 500_000:
            _STEMS.clear()
        _STEMS[word] = key
    return key


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


def varints(blob: bytes) -> list[int]:
    """Every varint of an FTS5 record, in order."""
    data, i, values = bytes(blob), 0, []
    while i < len(data):
        value, i = _varint(data, i)
        values.append(value)
    return values


def index_state(conn: sqlite3.Connection, table: str) -> tuple[int, list[int], bytes]:
    """(rows, tokens in each column, the structure record) of an FTS5 table, in one read: the
    averages record (id 1: a varint row count, then one varint token total per column) is what
    bm25() reads too; the structure record (id 10) changes with every write, where the totals
    need not (a passage replaced by one as long but of other words keeps them). (0, [], b"")
    before anything is committed."""
    blocks = dict(conn.execute(f"SELECT id, block FROM {table}_data WHERE id IN (1, 10)"))
    if 1 not in blocks:
        return 0, [], b""
    values = varints(blocks[1])
    return values[0], values[1:], bytes(blocks.get(10) or b"")
