"""Scoring a query outside FTS5 (retrieval/postings.py) must give the passages and scores FTS5's
own bm25() gives: otherwise answers would change with how the search was run, and a word the
index stems differently from loraqa would silently count for nothing."""

from __future__ import annotations

import random
import sqlite3

import pytest

from loraqa.documents import Document, Passage
from loraqa.retrieval import bm25
from loraqa.retrieval.postings import Postings
from loraqa.retrieval.sqlite import SEARCH, SqliteStore
from loraqa.retrieval.store import Settings

TEXTS = [
    ("Café studies", "The café says its studies of relational databases were happy ones. Cafés study."),
    ("Fièvre", "Fever and fevers: the patient's fever rose; naïve treatments failed in the café."),
    ("Plain", "Nothing here about the subject at all, only words and more words."),
    ("Studies", "Study after study: studying the studies says little. Relational relations relate."),
    ("Databases", "Relational databases store rows; the database says nothing of fever."),
]


def test_scores_equal_fts5s_own_bm25_with_diacritics_plurals_and_titles():
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(text, title, tokenize='porter unicode61 remove_diacritics 2')")
    for title, text in TEXTS:
        conn.execute("INSERT INTO t (text, title) VALUES (?, ?)", (text, title))
    conn.commit()  # FTS5 writes its statistics when a transaction ends
    words = ["cafe", "studies", "fever", "relational", "says", "technology", "possibly"]
    expected = {
        rowid: -score
        for rowid, score in conn.execute(
            "SELECT rowid, bm25(t, 1.0, 0.5) FROM t WHERE t MATCH ?", (" OR ".join(f'"{w}"' for w in words),)
        )
    }
    got = dict(Postings("t", (1.0, 0.5), ("text", "title")).best(conn, words, 10))
    assert set(got) == set(expected)
    for rowid, score in expected.items():
        assert got[rowid] == pytest.approx(score, rel=1e-9), rowid


@pytest.mark.parametrize(
    "word",
    [
        "technology",
        "technologies",
        "biology",
        "possibly",
        "reversibly",
        "assembly",
        "is",
        "us",
        "studies",
        "naïve",
        "relational",
    ],
)
def test_a_word_has_the_form_fts5_indexes_it_under(word):
    """Snowball's Porter lacks the revised algorithm's BLI and LOGI rules that FTS5 follows, and
    FTS5 leaves words under three letters alone: without stem()'s care such words would find no rows."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(text, tokenize='porter unicode61 remove_diacritics 2')")
    conn.execute("INSERT INTO t VALUES (?)", (word,))
    conn.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, instance)")
    assert bm25.stem(word) == conn.execute("SELECT term FROM v").fetchone()[0]


def put_one_passage(collection, source: str, text: str) -> None:
    doc = Document(source=source, title=source[0].upper(), text=text)
    collection.put(doc, [Passage(doc.id, 0, 0, len(text), text)])


def test_a_passage_replaced_by_one_as_long_is_searched_as_it_now_reads(tmp_path):
    """Same number of passages, same token counts, other words: the collection's totals do not
    move, and words kept from before the write must not be what the search reads."""
    store = SqliteStore(tmp_path / "store")
    collection = store.create("c", Settings())
    put_one_passage(collection, "a.txt", "oseltamivir shortens influenza")
    assert [h.source for h in collection.search("oseltamivir", 5)] == ["a.txt"]
    put_one_passage(collection, "a.txt", "zanamivir shortens influenza")
    assert collection.search("oseltamivir", 5) == []
    assert [h.source for h in collection.search("zanamivir", 5)] == ["a.txt"]


def test_a_write_is_seen_by_the_next_search(tmp_path):
    """The counts kept in memory belong to one state of the index: a passage added after a search
    is found by the next one, with the collection's new statistics."""
    store = SqliteStore(tmp_path / "store")
    collection = store.create("c", Settings())
    put_one_passage(collection, "a.txt", "Oseltamivir shortens influenza by a day.")
    assert [h.source for h in collection.search("oseltamivir influenza", 5)] == ["a.txt"]
    put_one_passage(collection, "b.txt", "Oseltamivir and oseltamivir again: oseltamivir.")
    hits = collection.search("oseltamivir", 5)
    assert [h.source for h in hits] == ["b.txt", "a.txt"]
    everything = '"oseltamivir"'
    expected = [row[6] for row in collection.conn.execute(SEARCH.format(only=""), (everything, 5))]
    assert [h.score for h in hits] == pytest.approx(expected, rel=1e-9)


def test_a_search_with_common_words_ranks_as_scoring_every_passage_would(tmp_path):
    """Over 1,000 passages hold "patient" and "study": the best five must be the ones, with the
    scores, that scoring the whole collection with FTS5 gives."""
    rng = random.Random(0)
    store = SqliteStore(tmp_path / "store")
    collection = store.create("c", Settings())
    rare = ["oseltamivir", "zanamivir", "baloxavir", "peramivir", "amantadine", "rimantadine"]
    for d in range(60):
        passages = []
        text = ""
        for i in range(25):
            words = (
                ["patient", "study"]
                + rng.sample(rare, 1) * rng.randint(0, 2)
                + [rng.choice(["dose", "trial", "week", "fever", "cough", "adults"]) for _ in range(12)]
            )
            rng.shuffle(words)
            sentence = " ".join(words) + ". "
            passages.append(Passage("", i, len(text), len(text) + len(sentence), sentence))
            text += sentence
        doc = Document(source=f"doc{d}.txt", title=f"Report {d}", text=text)
        collection.put(doc, [Passage(doc.id, p.index, p.start, p.end, p.text) for p in passages])
    assert collection.passage_count() == 1500
    query = "How did the patient study of oseltamivir and baloxavir dose go?"
    everything = " OR ".join(f'"{w}"' for w in ["patient", "study", "oseltamivir", "baloxavir", "dose", "go"])
    expected = [(row[11], row[6]) for row in collection.conn.execute(SEARCH.format(only=""), (everything, 5))]
    got = [(hit.passage_id, hit.score) for hit in collection.search(query, 5)]
    assert [pid for pid, _ in got] == [pid for pid, _ in expected]
    assert [score for _, score in got] == pytest.approx([score for _, score in expected], rel=1e-9)
