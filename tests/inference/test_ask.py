"""Asking a collection: a question without its passage is answered from the passages retrieval
finds, with citations pointing into the original documents, through every interface (the Python
API, `loraqa ask` and `predict`, the HTTP routes, the official openai client, the MCP SDK's client).

The adapter 'answers' memorised the fixture's questions' answers; the collection holds the
fixture's passages, so the right passage is found and read (fixtures `store` and `asker`)."""

from __future__ import annotations

import asyncio
import json

from helpers import live_server, local_client, read_jsonl, run_cli, write_jsonl


def test_a_question_without_a_passage_is_answered_from_the_collection(asker, two_adapters, store):
    from loraqa.retrieval import open_store

    row = two_adapters["rows"][0]
    [a] = asker.answer([{"question": row["question"], "adapter": "answers"}])
    assert a.answer == row["answers"]["text"][0] and not a.no_answer
    first = a.citations[0]
    document = open_store(store).open("fixture").document(first["document"])
    assert document.text == row["context"] and first["title"] == row["title"]
    assert document.text[a.start : a.end] == a.answer == first["quote"]
    assert (first["start"], first["end"]) == (a.start, a.end)
    assert a.windows >= 1 and all(c["passage_score"] > 0 for c in a.citations)
    # the same question with its passage: no retrieval, no citations
    [given] = asker.answer([{"question": row["question"], "context": row["context"], "adapter": "answers"}])
    assert given.citations is None and given.answer == a.answer


def test_nothing_found_is_no_answer_without_reading(asker):
    [a] = asker.answer([{"question": "zebra xylophone quixotic", "adapter": "answers"}])
    assert a.no_answer and a.answer == "" and a.windows == 0 and a.citations == []


def test_loraqa_ask_shows_the_answer_in_its_passage(two_adapters, store):
    row = two_adapters["rows"][1]
    args = [
        "ask",
        row["question"],
        "-a",
        f"answers={two_adapters['answers']}",
        "--collection",
        "fixture",
        "--store",
        str(store),
    ]
    res = run_cli(*args)
    assert res.exit_code == 0, res.output
    assert row["answers"]["text"][0] in res.stdout and row["title"] in res.stdout
    got = json.loads(run_cli(*args, "--json").stdout)
    assert got["answer"] == row["answers"]["text"][0] and got["citations"][0]["quote"] == got["answer"]
    res = run_cli("ask", "Q?", "-a", f"answers={two_adapters['answers']}")
    assert res.exit_code == 2 and "give --collection" in res.stderr


def test_predict_rows_without_a_context_read_the_collection(two_adapters, store, tmp_path):
    rows = two_adapters["rows"][:3]
    src = write_jsonl(tmp_path / "q.jsonl", [{"id": r["id"], "question": r["question"]} for r in rows])
    res = run_cli(
        "predict",
        "-a",
        f"answers={two_adapters['answers']}",
        "--collection",
        "fixture",
        "--store",
        str(store),
        "--input",
        str(src),
        "--output",
        str(tmp_path / "a.jsonl"),
    )
    assert res.exit_code == 0, res.output
    out = read_jsonl(tmp_path / "a.jsonl")
    assert [o["answer"] for o in out] == [r["answers"]["text"][0] for r in rows]
    assert all(o["citations"][0]["title"] == r["title"] for o, r in zip(out, rows))


def test_the_http_routes_answer_and_search_the_collection(asker, two_adapters):
    from loraqa.serving.app import create_app

    row = two_adapters["rows"][2]
    with local_client(create_app(asker)) as c:
        res = c.post("/v1/answer", json={"question": row["question"]})
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["answer"] == row["answers"]["text"][0] and body["citations"][0]["title"] == row["title"]
        # an adapter without a bound collection reads the one the request names
        named = c.post("/v1/answer", json={"question": row["question"], "adapter": "titles", "collection": "fixture"})
        assert named.json()["answer"] == row["title"] and named.json()["citations"]
        assert c.post("/v1/answer", json={"question": "Q?", "collection": "nope"}).status_code == 404
        found = c.post("/v1/search", json={"query": row["question"], "collection": "fixture", "k": 3}).json()
        assert found["results"][0]["text"] == row["context"]
        assert set(found["results"][0]) == {"document", "title", "source", "page", "start", "end", "score", "text"}
        assert c.post("/v1/search", json={"query": "x", "collection": "nope"}).status_code == 404


def test_the_openai_client_gets_citations_without_a_system_message(asker, two_adapters):
    import openai

    from loraqa.serving.app import create_app

    row = two_adapters["rows"][0]
    with live_server(create_app(asker)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        reply = client.chat.completions.create(model="answers", messages=[{"role": "user", "content": row["question"]}])
    assert reply.choices[0].message.content == row["answers"]["text"][0]
    assert reply.model_extra["loraqa"]["citations"][0]["title"] == row["title"]


def test_the_mcp_tools_search_and_answer_without_a_context(asker, two_adapters):
    from mcp import Client

    from loraqa.serving.mcp_server import build_server

    row = two_adapters["rows"][1]
    server, _ = build_server(asker)

    async def session():
        async with Client(server) as client:  # the SDK's client, connected in-process
            tools = {t.name for t in (await client.list_tools()).tools}
            found = await client.call_tool("search_documents", {"query": row["question"], "domain": "answers", "k": 2})
            answered = await client.call_tool("answer_question", {"question": row["question"], "domain": "answers"})
            return tools, found, answered

    tools, found, answered = asyncio.run(session())
    assert {"search_documents", "answer_question", "list_domains"} <= tools
    assert found.structured_content["passages"][0]["text"] == row["context"]
    got = answered.structured_content
    assert got["answer"] == row["answers"]["text"][0] and got["citations"][0]["title"] == row["title"]


def test_eval_retrieve_scores_answers_without_their_passages(two_adapters, tmp_path):
    data = write_jsonl(tmp_path / "known.jsonl", two_adapters["rows"])
    out = tmp_path / "ev"
    res = run_cli(
        "eval",
        str(two_adapters["answers"]),
        "--data",
        str(data),
        "--output",
        str(out),
        "--retrieve",
        "--holdout-contexts",
        "0.3",
    )
    assert res.exit_code == 0, res.output
    r = json.loads((out / "summary.json").read_text())["retrieval"]
    assert r["questions"] + r["held_out_questions"] == len(two_adapters["rows"]) and r["held_out_questions"] > 0
    assert 0 <= r["recall@1"] <= r["recall@5"] <= r["recall@20"] <= 100 and 0 <= r["mrr"] <= 1
    assert r["recall@5"] >= 80  # the fixture's questions share words with their own passage
    assert r["given_exact_match"] == 100.0  # a memorised adapter, given the passage
    assert r["exact_match"] >= 60  # and mostly right when it has to find the passage itself
    assert 0 <= r["abstained_when_held_out"] <= 100
    assert "without their passages" in res.stdout and "recall@5" in res.stdout
    res = run_cli("eval", str(two_adapters["answers"]), "--data", str(data), "--holdout-contexts", "0.3")
    assert res.exit_code == 2 and "--retrieve" in res.stderr


def test_a_confident_answer_from_a_poorly_matching_passage_does_not_win(tmp_path):
    """A small adapter is often as sure of an answer read in another person's passage; without the
    search score counting, the wrong passage's answer would be returned and cited."""
    from loraqa.inference.engines.base import Generated
    from loraqa.inference.reading import Reading, WindowInput, choose_answer
    from loraqa.retrieval.store import Hit

    def reading(weight: float) -> Reading:
        hits = [
            Hit("d1", "", "a.txt", None, 0, 40, 10.0, "Rere Talomo bought a clock at Istra."),
            Hit("d2", "", "b.txt", None, 0, 40, 2.0, "Vipe Nereli bought a clock at Elst."),
        ]
        r = Reading(
            "a",
            [WindowInput([1], None, None, origin=0), WindowInput([1], None, None, origin=1)],
            8,
            None,
            threshold=-0.65,
            hits=hits,
            passage_weight=weight,
        )
        r.results = [Generated("Istra", -0.6, 2), Generated("Elst", -0.3, 2)]
        return r

    a = choose_answer(reading(1.0))
    assert a.answer == "Istra" and a.citations[0]["document"] == "d1"
    assert a.score == -0.6  # the reader's own score, the one the threshold was calibrated on
    assert choose_answer(reading(0.0)).answer == "Elst"  # the reader alone
