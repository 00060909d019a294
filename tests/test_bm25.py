"""Scoring a query's candidate passages outside FTS5 (retrieval/bm25.py) must give the scores
FTS5's own bm25() gives: otherwise a search whose question has a common word would rank passages
differently from one without, and answers would change with the size of the collection."""

from __future__ import annotations

import random
import sqlite3

import pytest

from loraqa.documents import Document, Passage
from loraqa.retrieval import bm25
from loraqa.retrieval.sqlite import SEARCH, SqliteStore
from loraqa.retrieval.store import Settings

TEXTS = [
    ("Café studies", "The café says its studies of relational databases were happy ones. Cafés study."),
    ("Fièvre", "Fever and fevers: the patient's fever rose; naïve treatments failed in the café."),
    ("Plain", "Nothing here about the subject at all, only words and more words."),
    ("Studies", "Study after study: studying the studies says little. Relational relations relate."),
    ("Databases", "Relational databases store rows; the database says nothing of fever."),
]


def test_candidate_scores_equal_fts5s_own_bm25_with_diacritics_plurals_and_titles():
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(text, title, tokenize='porter unicode61 remove_diacritics 2')")
    for title, text in TEXTS:
        conn.execute("INSERT INTO t (text, title) VALUES (?, ?)", (text, title))
    conn.commit()  # FTS5 writes its statistics when a transaction ends
    words = ["cafe", "studies", "fever", "relational", "says"]
    expected = {rowid: -score for rowid, score in conn.execute(
        "SELECT rowid, bm25(t, 1.0, 0.5) FROM t WHERE t MATCH ?", (" OR ".join(f'"{w}"' for w in words),))}
    rows = [(r, (text, title)) for r, text, title in conn.execute("SELECT rowid, text, title FROM t")]
    got = bm25.Scorer("t", (1.0, 0.5)).scores(conn, words, rows)
    assert set(expected) <= set(got)
    for rowid, score in expected.items():
        assert got[rowid] == pytest.approx(score, rel=1e-9), rowid


def test_a_search_with_common_words_ranks_as_scoring_every_passage_would(tmp_path):
    """Over 1,000 passages hold "patient" and "study": such a question's candidates come from its
    rare words and are scored outside FTS5; the best five must be the ones, with the scores,
    that scoring the whole collection with FTS5 gives."""
    rng = random.Random(0)
    store = SqliteStore(tmp_path / "store")
    collection = store.create("c", Settings())
    rare = ["oseltamivir", "zanamivir", "baloxavir", "peramivir", "amantadine", "rimantadine"]
    for d in range(60):
        passages = []
        text = ""
        for i in range(25):
            words = ["patient", "study"] + rng.sample(rare, 1) * rng.randint(0, 2) + \
                    [rng.choice(["dose", "trial", "week", "fever", "cough", "adults"]) for _ in range(12)]
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
    assert len(collection._selective(["patient", "study", "oseltamivir", "baloxavir", "dose", "go"])) < 6
    got = [(hit.passage_id, hit.score) for hit in collection.search(query, 5)]
    assert [pid for pid, _ in got] == [pid for pid, _ in expected]
    assert [score for _, score in got] == pytest.approx([score for _, score in expected], rel=1e-9)
