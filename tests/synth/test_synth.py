"""Training data from documents: a question-generation adapter (data.task=question_generation),
`loraqa synth` writing checked question-answer pairs from a collection's passages, and the
round-trip filter that keeps only the pairs a reader answers the same way."""

from __future__ import annotations

import json

import pytest

from helpers import SQUAD_V1, read_jsonl, run_cli


def test_a_question_generation_adapter_writes_the_question_for_an_answer(question_writer, squad_rows, tmp_path):
    """Trained on the rows turned around: given a passage and an answer it writes the question
    (were the rows not turned, it would answer instead, and eval would score answers)."""
    from loraqa.adapters.folder import resolve_adapter
    from loraqa.inference.answerer import Answerer

    run, rows = question_writer["run"], question_writer["rows"]
    cfg = resolve_adapter(run).config
    assert cfg.data.task == "question_generation" and cfg.data.template == "question_generation"
    writer = Answerer({"qg": str(run)}, dtype="fp32")
    got = writer.answer([{"question": r["answers"]["text"][0], "context": r["context"], "adapter": "qg"} for r in rows])
    assert [a.answer for a in got] == [r["question"] for r in rows]
    report = json.loads((run / "data_report.json").read_text())
    assert report["train_rows"] + report["test_rows"] == 10
    # eval turns a QA file around for it too: the references are the questions
    res = run_cli("eval", str(run), "--data", str(SQUAD_V1), "--limit", "4", "--output", str(tmp_path / "ev"))
    assert res.exit_code == 0, res.output
    items = read_jsonl(tmp_path / "ev" / "predictions.jsonl")
    assert [i["references"] for i in items] == [[r["question"]] for r in squad_rows[:4]]
    assert [i["question"] for i in items] == [r["answers"]["text"][0] for r in squad_rows[:4]]


def test_answer_candidates_are_quoted_names_and_numbers_first():
    from loraqa.synth.candidates import answer_candidates

    text = "The Seine flows through Paris. Most people visit in 1903 and later. It has 17 bridges."
    got = answer_candidates(text, 4, seed=1)
    assert all(text[s : s + len(a)] == a for a, s in got)  # offsets into the passage
    assert {a for a, _ in got} == {"Seine", "Paris", "1903", "17 bridges"}  # no "The", no "and", no "Most"
    assert answer_candidates(text, 4, seed=1) == got  # the same for a seed


def test_repeated_and_near_repeated_questions_of_a_document_are_dropped():
    from loraqa.synth.checks import DUPLICATE, NEAR_DUPLICATE, QuestionLedger, locate

    ledger = QuestionLedger()
    assert ledger.check("d1", "Which river flows through Paris?") is None
    assert ledger.check("d1", "which river flows through Paris") == DUPLICATE
    assert ledger.check("d1", "Which river flows through the city of Paris?") == NEAR_DUPLICATE
    assert ledger.check("d2", "Which river flows through Paris?") is None  # another document may ask it
    # the same words asking for another answer are another question
    assert ledger.check("d3", "What did Suka Dasabo buy?", "a black clock") is None
    assert ledger.check("d3", "Where did Suka Dasabo buy the clock?", "Osk") is None
    assert ledger.check("d3", "When did Suka Dasabo buy the clock?", "Last spring") is None
    assert ledger.check("d3", "What did Suka Dasabo buy at the market?", "black clock") == NEAR_DUPLICATE
    assert locate("seine", "The Seine flows") == 4 and locate("Loire", "The Seine flows") is None
    assert locate("Seine  flows", "The Seine\nflows") == 4


def test_a_question_naming_what_the_passage_never_mentions_is_caught():
    """A writer that garbles a name ("Retomo" for "Refevi") asks about nobody: the check names it.
    A sentence's first word, a name the passage has in another case or with a possessive, and a
    hyphenated name the passage has are not flagged."""
    from loraqa.synth.checks import unknown_names

    passage = "Last spring Noka Todasa bought a coat in Jean-Luc's shop. Tamo Refevi owns the NFL team."
    assert unknown_names("What did Retomo buy?", passage) == ["Retomo"]
    assert unknown_names("Which team does Tamo Refevi own? Where is Dami?", passage) == ["Dami"]
    assert unknown_names("What did Noka Todasa's friend buy in Jean-Luc's shop?", passage) == []
    assert unknown_names("Which nfl team? What does TAMO own?", passage) == []
    assert unknown_names('"Where" did noka buy the coat?', passage) == []


def test_the_readers_span_replaces_loose_answer_bounds_and_unfinished_or_unknown_questions_go(answerer, two_adapters):
    """A pair whose answer runs a word past what the question asks is kept with the reader's span
    (the writer's answer stays in the row); with reader_spans off it keeps the writer's. A question
    the writer did not finish, and one naming someone the passage never mentions, are dropped, the
    latter kept when check_names is off."""
    from helpers import GivenPairs
    from loraqa.synth.generators import Draft
    from loraqa.synth.pipeline import Reader, synthesise
    from loraqa.synth.sampling import SourcePassage

    rows, loose = [], []
    for r in two_adapters["rows"]:
        a, c = r["answers"]["text"][0], r["context"]
        if c.count(a) != 1 or len(rows) == 4:
            continue
        nxt = c[c.find(a) + len(a) :].split()
        if nxt and nxt[0].isalpha():  # the word after the answer: F1 2/3 against the answer alone
            rows.append(r)
            loose.append(f"{a} {nxt[0]}")
    assert len(rows) == 4, "the fixture has answers followed by a word"
    passages = [
        SourcePassage(f"doc{i}", r["title"], "fixture", None, 0, len(r["context"]), r["context"])
        for i, r in enumerate(rows)
    ]
    drafts = [Draft(i, r["question"], w) for i, (r, w) in enumerate(zip(rows, loose))]
    drafts.append(Draft(0, rows[0]["question"][:-1] + " and", rows[0]["answers"]["text"][0], cut_off=True))
    drafts.append(Draft(1, "What did Zorblax Quimm find?", rows[1]["answers"]["text"][0]))
    reader = Reader(answerer, "answers")
    out, report = synthesise(passages, GivenPairs(drafts), reader)
    assert [(r["answers"]["text"][0], r["generated_answer"]) for r in out] == [
        (r["answers"]["text"][0], w) for r, w in zip(rows, loose)
    ]
    for r, row in zip(out, rows):
        assert r["answers"]["answer_start"] == row["answers"]["answer_start"] and r["roundtrip_f1"] < 1
    assert report.answers_from_reader == 4
    assert report.dropped == {"question_cut_off": 1, "name_not_in_passage": 1}
    reader.spans = False
    writers, report = synthesise(passages, GivenPairs(drafts), reader, check_names=False)
    assert [r["answers"]["text"][0] for r in writers if "Zorblax" not in r["question"]] == loose
    assert report.answers_from_reader == 0 and all("generated_answer" not in r for r in writers)
    # unchecked, the made-up name goes on to the round trip, which alone decides
    assert "name_not_in_passage" not in report.dropped and report.dropped["question_cut_off"] == 1
    assert report.kept + report.dropped.get("round_trip", 0) == 5


def test_the_round_trip_filter_drops_swapped_answers_and_keeps_good_pairs(answerer, two_adapters):
    """The reader ('answers', which knows these questions) must give the pair's answer from the
    passage: a pair whose answer was swapped with another question's is dropped, as is an answer
    not quoted from the passage; the good pairs are kept with their offsets."""
    from helpers import GivenPairs
    from loraqa.synth.generators import Draft
    from loraqa.synth.pipeline import Reader, synthesise
    from loraqa.synth.sampling import SourcePassage

    rows = [r for r in two_adapters["rows"] if r["context"].count(r["answers"]["text"][0]) == 1][:6]
    passages = [
        SourcePassage(f"doc{i}", r["title"], "fixture", None, 0, len(r["context"]), r["context"])
        for i, r in enumerate(rows)
    ]
    good = [Draft(i, r["question"], r["answers"]["text"][0]) for i, r in enumerate(rows)]
    # The answer of another question on the same passage: quoted from it, so only the round trip can
    # tell. Each is filed under a document of its own, so that it is not dropped as a repeated question.
    swapped = []
    for r in rows:
        for o in rows:
            if o["context"] == r["context"] and o["answers"]["text"][0] != r["answers"]["text"][0]:
                passages.append(
                    SourcePassage(
                        f"swap{len(swapped)}", r["title"], "fixture", None, 0, len(r["context"]), r["context"]
                    )
                )
                swapped.append(Draft(len(passages) - 1, r["question"], o["answers"]["text"][0]))
    missing = [Draft(0, "What is never said?", "a phrase the passage lacks")]
    assert swapped, "the fixture has passages with two questions"
    out, report = synthesise(passages, GivenPairs(good + swapped + missing, "planted"), Reader(answerer, "answers"))
    assert sorted(r["question"] for r in out) == sorted(r["question"] for r in rows)
    assert {r["document"] for r in out} == {f"doc{i}" for i in range(len(rows))}
    for row in out:
        at = row["answers"]["answer_start"][0]
        assert row["context"][at : at + len(row["answers"]["text"][0])] == row["answers"]["text"][0]
        assert row["roundtrip_f1"] >= 0.5 and row["generator"] == "planted"
    assert report.dropped == {"round_trip": len(swapped), "answer_not_in_passage": 1}
    assert report.generated == len(good) + len(swapped) + 1 and report.kept == len(rows)


def test_a_given_answer_is_scored_on_the_scale_of_the_readers_own(answerer, two_adapters):
    """Scored by teacher forcing, the adapter's own greedy answer gets the score generation gave it:
    the likelihood round trip compares like with like."""
    rows = two_adapters["rows"][:4]
    for name in ("answers", "titles"):
        said = answerer.answer([{"question": r["question"], "context": r["context"], "adapter": name} for r in rows])
        scored = answerer.answer_logprobs(
            [
                {"question": r["question"], "context": r["context"], "answer": a.answer, "adapter": name}
                for r, a in zip(rows, said)
            ]
        )
        assert [a.answer for a in said] == (
            [r["answers"]["text"][0] for r in rows] if name == "answers" else [r["title"] for r in rows]
        )
        assert scored == pytest.approx([a.score for a in said], abs=1e-4)


def test_a_given_answer_is_scored_where_its_question_was_written_about(answerer, two_adapters, squad_rows):
    """An answer that stands twice in a long passage is scored in the window of the occurrence
    answer_start points at: scored at the first one instead, a pair written about the second
    would be judged on text its question never saw."""
    row = two_adapters["rows"][0]
    answer = row["answers"]["text"][0]
    filler = " ".join(dict.fromkeys(r["context"] for r in squad_rows if answer not in r["context"]))
    while len(filler) < 8000:  # several windows between the two occurrences
        filler += " " + filler
    context = row["context"] + " " + filler + " " + row["context"]
    first = context.find(answer)
    second = context.rfind(answer)
    # the same passage with the first occurrence blotted out: its window of the second is the same text
    blotted = context[:first] + "x" * len(answer) + context[first + len(answer) :]
    asked = {"question": row["question"], "answer": answer, "adapter": "answers", "answer_start": second}
    at_second, in_blotted = answerer.answer_logprobs([dict(asked, context=context), dict(asked, context=blotted)])
    assert at_second == pytest.approx(in_blotted, abs=1e-6)
    [at_first] = answerer.answer_logprobs([dict(asked, context=context, answer_start=first)])
    assert at_first != pytest.approx(at_second, abs=1e-6)  # the two windows differ: the test can tell them apart


def test_the_likelihood_margin_keeps_pairs_the_reader_finds_nearly_as_likely(answerer, two_adapters):
    """A reader that answers every question otherwise ('titles' gives the passage's title) drops
    every pair by F1; with a margin, the pairs whose answer it finds within the margin of its own
    are kept, each with its gap, and no other."""
    from helpers import GivenPairs
    from loraqa.synth.generators import Draft
    from loraqa.synth.pipeline import Reader, synthesise
    from loraqa.synth.sampling import SourcePassage

    rows = [r for r in two_adapters["rows"] if r["answers"]["text"][0] not in r["title"]][:6]
    passages = [
        SourcePassage(f"doc{i}", r["title"], "fixture", None, 0, len(r["context"]), r["context"])
        for i, r in enumerate(rows)
    ]
    pairs = GivenPairs([Draft(i, r["question"], r["answers"]["text"][0]) for i, r in enumerate(rows)], "given")
    none, report = synthesise(passages, pairs, Reader(answerer, "titles"))
    assert none == [] and report.dropped == {"round_trip": len(rows)}
    every, report = synthesise(passages, pairs, Reader(answerer, "titles", margin=1e9))
    assert len(every) == report.kept == report.kept_by_likelihood == len(rows)
    gaps = sorted(r["roundtrip_logprob_gap"] for r in every)
    assert gaps[0] > 0  # 'titles' prefers its own answer to each of these
    margin = (gaps[2] + gaps[3]) / 2
    some, report = synthesise(passages, pairs, Reader(answerer, "titles", margin=margin))
    assert sorted(r["roundtrip_logprob_gap"] for r in some) == gaps[:3] and report.kept_by_likelihood == 3
    assert report.roundtrip_margin == margin


def test_loraqa_synth_writes_checked_pairs_that_training_can_split_by_document(
    question_writer, two_adapters, store, tmp_path
):
    """From the collection 'fixture': the question writer writes a question per answer candidate,
    the 'answers' adapter reads them back; the known questions survive, each row points into its
    document, and unanswerable copies are set against other documents' passages."""
    from loraqa.data.loading import load_rows
    from loraqa.data.splitting import DataReport, split_rows
    from loraqa.synth.candidates import answer_candidates

    out = tmp_path / "synth.jsonl"
    res = run_cli(
        "synth",
        "fixture",
        "--store",
        str(store),
        "-a",
        str(question_writer["run"]),
        "--reader",
        str(two_adapters["answers"]),
        "--per-passage",
        "200",
        "--unanswerable",
        "0.5",
        "-o",
        str(out),
    )
    assert res.exit_code == 0, res.output
    rows = load_rows(str(out))
    raw = read_jsonl(out)
    report = json.loads((tmp_path / "synth.jsonl.report.json").read_text())
    answerable = [r for r in raw if r["answers"]["text"]]
    assert len(answerable) == report["kept"] and len(raw) - len(answerable) == report["unanswerable"] >= 1
    assert report["kept"] + sum(report["dropped"].values()) == report["generated"]
    assert f"{report['kept']} kept" in res.stderr
    known = {r["question"] for r in question_writer["rows"]} & {r["question"] for r in two_adapters["rows"]}
    expected = {
        r["question"]
        for r in question_writer["rows"]
        if r["question"] in known and r["answers"]["text"][0] in [a for a, _ in answer_candidates(r["context"], 200, 0)]
    }
    assert expected and expected <= {r["question"] for r in answerable}
    for r in answerable:
        at = r["answers"]["answer_start"][0]
        assert r["context"][at : at + len(r["answers"]["text"][0])] == r["answers"]["text"][0]
        assert r["roundtrip_f1"] >= 0.5 and r["generator"].startswith("local:")
    by_id = {r["id"]: r for r in raw}
    for r in raw:
        if not r["answers"]["text"]:
            assert by_id[r["asked_of"]]["document"] != r["document"]
    # the loader keeps the documents, so a split by document keeps each one on one side
    assert all(r.get("document") for r in rows)
    train, test = split_rows(rows, 0.3, 42, "document", DataReport())
    assert not {r["document"] for r in train} & {r["document"] for r in test}


def test_synth_refuses_what_it_cannot_do_in_one_line(two_adapters, question_writer, store, tmp_path):
    out = tmp_path / "o.jsonl"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "blank.txt").write_text("   \n")
    writer = str(question_writer["run"])
    cases = [
        (["fixture", "--store", str(store), "-a", writer, "--reader", str(tmp_path / "gone"), "-o", str(out)], "gone"),
        (["--input", str(tmp_path / "empty"), "-a", writer, "-o", str(out)], "no passages"),
        (["fixture", "--store", str(store), "--generator", "llm", "-o", str(out)], "unknown generator"),
        (["fixture", "--store", str(store), "-o", str(out)], "give --adapter"),
        (["fixture", "--store", str(store), "-a", str(two_adapters["answers"]), "-o", str(out)], "not to write them"),
        (["fixture", "--input", "x.txt", "--store", str(store), "-o", str(out)], "not both"),
        (["nope", "--store", str(store), "-a", str(two_adapters["answers"]), "-o", str(out)], "nope"),
        (["fixture", "--store", str(store), "--unanswerable", "2", "-o", str(out)], "--unanswerable"),
        (
            ["fixture", "--store", str(store), "-a", writer, "--roundtrip-margin", "1", "-o", str(out)],
            "needs a --reader",
        ),
        (
            ["fixture", "--store", str(store), "-a", writer, "--spans", "both", "-o", str(out)],
            "--spans is reader or writer",
        ),
    ]
    for args, says in cases:
        res = run_cli("synth", *args)
        assert res.exit_code != 0 and says in res.stderr and "Traceback" not in res.output, (args, res.output)
        assert len(res.stderr.strip().splitlines()) == 1
    assert not out.exists()
