"""`loraqa collection`: folders of real files in, ranked passages out; reruns that do nothing,
changed files that replace their passages, and a killed ingest that loses nothing committed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from documents_made_here import PAGE, write_docx, write_pdf
from helpers import run_cli


@pytest.fixture
def folder(tmp_path):
    docs = tmp_path / "docs"
    (docs / "ward").mkdir(parents=True)
    write_pdf(
        docs / "ward" / "letter.pdf", ["Patient: Jane Roe\nDiagnosis: asthma", "Dose: 5 mg salbutamol twice daily"]
    )
    write_docx(docs / "policy.docx")
    (docs / "notes.html").write_text(PAGE)
    (docs / "guide.md").write_text("# Triage guide\n\nRed means the patient is seen now.\n")
    (docs / ".hidden.txt").write_text("left out")
    (docs / "image.png").write_bytes(b"\x89PNG")  # not a document suffix: a folder's other files are left alone
    return docs


def add(store, *paths):
    return run_cli("collection", "add", "clinic", *map(str, paths), "--store", str(store))


# every test runs once on each store: SQLite and PostgreSQL (fixture store_spec)


def search(store, query, k=5):
    res = run_cli("collection", "search", "clinic", query, "-k", str(k), "--store", str(store), "--json")
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in res.stdout.splitlines()]


def test_a_folder_goes_in_and_its_passages_come_back_ranked(folder, store_spec):
    store = store_spec
    res = add(store, folder)
    assert res.exit_code == 0, res.output
    assert "4 added, 0 replaced, 0 unchanged documents; 0 files skipped" in res.stderr
    [hit] = search(store, "salbutamol dose", k=1)
    assert hit["title"] == "Discharge letter" and hit["page"] == 2 and hit["source"].endswith("letter.pdf")
    assert "«salbutamol»" in hit["snippet"] and hit["score"] > 0
    listed = run_cli("collection", "list", "--store", str(store))
    assert "clinic" in listed.stdout and " 4 " in listed.stdout
    hits = search(store, "How many days of sick leave need a note?")
    assert hits[0]["title"] == "Leave policy" and hits[0]["heading"] == "Sick leave"
    assert hits == sorted(hits, key=lambda h: -h["score"])


def test_offsets_point_into_the_document(folder, store_spec):
    from loraqa.retrieval import open_store

    store = store_spec
    assert add(store, folder).exit_code == 0
    collection = open_store(store).open("clinic")
    for hit in collection.search("chloroplasts light energy", k=3):
        assert collection.document(hit.document).text[hit.start : hit.end] == hit.text


def test_rerunning_does_nothing_and_a_changed_file_replaces_its_passages(folder, store_spec):
    store = store_spec
    assert add(store, folder).exit_code == 0
    again = add(store, folder)
    assert "0 added, 0 replaced, 0 unchanged documents (4 files unchanged since the last add)" in again.stderr
    (folder / "guide.md").write_text("# Triage guide\n\nGreen means the patient can wait.\n")
    changed = add(store, folder)
    assert "0 added, 1 replaced" in changed.stderr
    assert search(store, "green wait")[0]["title"] == "Triage guide"
    assert not search(store, "seen now")  # the old passages are gone
    os.utime(folder / "policy.docx")  # touched, same content
    touched = add(store, folder)
    assert "0 added, 0 replaced, 1 unchanged documents" in touched.stderr


def test_bad_files_are_named_and_the_others_still_go_in(folder, tmp_path, store_spec):
    store = store_spec
    write_pdf(folder / "scan.pdf", ["x"], text=False)
    (folder / "empty.txt").write_text("")
    res = add(store, folder, tmp_path / "missing.docx")
    assert res.exit_code == 1 and "Traceback" not in res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3
    assert any("scan.pdf: the PDF has no text layer" in e for e in errors)
    assert any("empty.txt: the file is empty" in e for e in errors)
    assert any("missing.docx: skipped, no such file or folder" in e for e in errors)
    assert "4 added" in res.stderr and "3 files skipped" in res.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["search", "nothere", "dose"], "no collection named 'nothere'"),
        (["search", "clinic", "?? !"], "the query is empty"),
        (["add", "bad name", "x.txt"], "collection name 'bad name'"),
        (["show", "clinic", "no-such-id"], "no document 'no-such-id'"),
        (["remove", "clinic", "--document", "no-such-id"], "no document 'no-such-id'"),
    ],
)
def test_bad_collection_commands_are_one_line(folder, store_spec, args, message):
    store = store_spec
    assert add(store, folder / "guide.md").exit_code == 0
    res = run_cli("collection", *args, "--store", str(store))
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert message in res.stderr, res.stderr


def test_removing_a_document_and_a_collection(folder, store_spec):
    from loraqa.retrieval import open_store

    store = store_spec
    assert add(store, folder).exit_code == 0
    doc = search(store, "salbutamol")[0]["document"]
    assert run_cli("collection", "remove", "clinic", "--document", doc, "--store", str(store)).exit_code == 0
    assert not search(store, "salbutamol")
    assert "1 added" in add(store, folder).stderr  # its file is read again
    assert run_cli("collection", "remove", "clinic", "--store", str(store)).exit_code == 0
    assert "clinic" not in open_store(store).names()


def test_a_killed_ingest_leaves_whole_documents_and_the_rerun_finishes(tmp_path, store_spec):
    from loraqa.documents import read_path, split_document
    from loraqa.retrieval import open_store

    docs = tmp_path / "many"
    docs.mkdir()
    for i in range(400):
        (docs / f"note{i:03d}.txt").write_text(
            "\n\n".join(
                f"Note {i} paragraph {j}: the patient in bed {i} was given dose {j} of drug {i * 7 % 13}."
                for j in range(30)
            )
        )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loraqa",
            "collection",
            "add",
            "many",
            str(docs),
            "--store",
            store_spec,
            "--passage-chars",
            "200",
            "--overlap",
            "50",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if open_store(store_spec).open("many").counts()[0] >= 20:
                break
        except Exception:  # noqa: BLE001 - the collection is being made
            pass
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    collection = open_store(store_spec).open("many")
    present = collection.documents()
    assert 20 <= len(present) < 400, "the kill came too late to test anything"
    for info in present:  # every document that is there is whole: all its passages, each searchable
        assert info.passages == len(split_document(read_path(info.source)[0], 200, 50))
    if not store_spec.startswith("postgresql"):
        conn = sqlite3.connect(f"{store_spec}/many.sqlite")
        assert (
            conn.execute("SELECT count(*) FROM passages").fetchone()[0]
            == conn.execute("SELECT count(*) FROM passages_fts").fetchone()[0]
        )
        conn.close()
    res = run_cli("collection", "add", "many", str(docs), "--store", store_spec)
    assert res.exit_code == 0, res.output
    assert f"{400 - len(present)} added" in res.stderr
    assert collection.counts()[0] == 400
