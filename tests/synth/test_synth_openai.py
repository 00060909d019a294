"""`loraqa synth --generator openai`: question-answer pairs from OpenAI-compatible chat endpoints,
driven with the official openai client against real HTTP servers: loraqa serve serving a
question-generation adapter, and a scripted endpoint that misbehaves the ways hosted LLMs do
(429s, 500s, prose instead of JSON, answers that are not in the passage)."""

from __future__ import annotations

import json
import socket
import threading

import pytest
from fastapi import FastAPI, Request  # at module level: the handlers' annotations are read by name
from fastapi.responses import JSONResponse

from helpers import live_server, read_jsonl, run_cli

KEY = "qg-secret"


@pytest.fixture(scope="module")
def qg_server(question_writer):
    from loraqa.inference.answerer import Answerer
    from loraqa.serving.app import create_app
    from loraqa.serving.options import ServeOptions

    writer = Answerer({"qg": str(question_writer["run"])}, dtype="fp32")
    with live_server(create_app(writer, ServeOptions(api_key=KEY))) as url:
        yield url + "/v1"


def synth(*args):
    return run_cli("synth", *args)


def test_loraqa_serve_writes_the_same_questions_as_the_local_generator(
    qg_server, question_writer, two_adapters, store, tmp_path, monkeypatch
):
    """The question-generation adapter served by loraqa and asked through the openai client
    writes, for the same passages and answer candidates, the questions the local generator
    writes; the pairs pass the same checks, come with token counts, train, and a rerun is
    answered from the cache."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    common = [
        "fixture",
        "--store",
        str(store),
        "--passages",
        "6",
        "--per-passage",
        "4",
        "--reader",
        str(two_adapters["answers"]),
        "--min-roundtrip-f1",
        "0",
    ]
    local = synth(*common, "-a", str(question_writer["run"]), "-o", str(tmp_path / "local.jsonl"))
    assert local.exit_code == 0, local.output
    out = tmp_path / "served.jsonl"
    served = synth(
        *common,
        "--generator",
        "openai",
        "--ask",
        "questions",
        "--base-url",
        qg_server,
        "--model",
        "qg",
        "--concurrency",
        "3",
        "-o",
        str(out),
    )
    assert served.exit_code == 0, served.output
    got, want = read_jsonl(out), read_jsonl(tmp_path / "local.jsonl")
    # The same candidates were asked for; where the writer learned the passage its question is
    # sure and must come back word for word. Elsewhere this tiny writer's next words are near
    # ties that the padding of a different batch (one request at a time here, 16 windows a batch
    # there) can tip, so those questions, and which of two repeats is kept, may differ.
    reports = [json.loads((tmp_path / f"{n}.jsonl.report.json").read_text()) for n in ("served", "local")]
    assert reports[0]["generated"] == reports[1]["generated"] > 0
    learned = {r["question"] for r in question_writer["rows"]}
    sure = {_pair(r): r["question"] for r in want if r["question"] in learned}
    assert len(sure) >= 3 and {_pair(r): r["question"] for r in got if _pair(r) in sure} == sure
    assert {r["generator"] for r in got} == {"openai:qg"}
    report = json.loads((tmp_path / "served.jsonl.report.json").read_text())
    stats = report["generator"]
    assert stats["requests"] == report["generated"] > 0 and stats["cached"] == 0
    assert stats["prompt_tokens"] > 10 * stats["requests"] and stats["completion_tokens"] >= stats["requests"]
    assert f"{stats['requests']} requests" in served.stderr
    # The rerun asks nothing: with the server gone it still writes the same rows.
    again = synth(
        *common,
        "--generator",
        "openai",
        "--ask",
        "questions",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--model",
        "qg",
        "--cache",
        str(tmp_path / "served.jsonl.cache.sqlite"),
        "-o",
        str(tmp_path / "again.jsonl"),
    )
    assert again.exit_code == 0, again.output
    assert read_jsonl(tmp_path / "again.jsonl") == got
    assert json.loads((tmp_path / "again.jsonl.report.json").read_text())["generator"]["requests"] == 0
    # `loraqa train` takes the output as it is, a document's questions on one side of the split.
    sets = [
        "data.split_by=document",
        "data.test_size=0.3",
        "data.num_samples=null",
        "train.max_steps=2",
        "train.eval_steps=0",
        "track.report_to=none",
        "model.dtype=fp32",
    ]
    trained = run_cli(
        "train",
        "--data",
        str(out),
        "--model",
        _base_of(question_writer["run"]),
        "--output",
        str(tmp_path / "run"),
        *[a for s in sets for a in ("--set", s)],
    )
    assert trained.exit_code == 0, trained.output
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    docs = {r["id"]: r["document"] for r in got}
    assert not {docs[i] for i in split["train"]} & {docs[i] for i in split["test"]}


def _pair(row):
    return row["document"], row["answers"]["answer_start"][0], row["answers"]["text"][0]


def _base_of(run):
    from loraqa.adapters.folder import resolve_adapter

    return resolve_adapter(run).config.model.name


def test_questions_the_server_cut_off_at_max_tokens_are_dropped_and_the_cache_remembers_why(
    qg_server, store, tmp_path, monkeypatch
):
    """Asked with --max-tokens 2, loraqa serve stops every question mid-sentence (finish_reason
    'length'): none may become training data, and the rerun from the cache (the server gone)
    knows why. A cache written before finish reasons were kept still opens."""
    import sqlite3

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    args = [
        "fixture",
        "--store",
        str(store),
        "--passages",
        "3",
        "--per-passage",
        "3",
        "--generator",
        "openai",
        "--ask",
        "questions",
        "--model",
        "qg",
        "--cache",
        str(tmp_path / "cache.sqlite"),
    ]
    res = synth(*args, "--base-url", qg_server, "--max-tokens", "2", "-o", str(tmp_path / "cut.jsonl"))
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "cut.jsonl.report.json").read_text())
    assert report["generated"] == 9 and report["kept"] == 0 and report["dropped"] == {"question_cut_off": 9}
    assert "note: 9 of 9 questions reached the writer's token limit" in res.stderr and "--max-tokens" in res.stderr
    again = synth(*args, "--base-url", "http://127.0.0.1:9/v1", "--max-tokens", "2", "-o", str(tmp_path / "c2.jsonl"))
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "c2.jsonl.report.json").read_text())["dropped"] == {"question_cut_off": 9}
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as db:
        db.execute(
            "CREATE TABLE replies (key TEXT PRIMARY KEY, content TEXT NOT NULL, "
            "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL)"
        )
    res = synth(*args[:-2], "--cache", str(old), "--base-url", qg_server, "-o", str(tmp_path / "full.jsonl"))
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "full.jsonl.report.json").read_text())
    # with the server's own limit most questions end by themselves (this tiny writer loops on a few)
    assert report["generated"] == 9 and report["dropped"].get("question_cut_off", 0) < 9
    with sqlite3.connect(old) as db:
        reasons = [r[0] for r in db.execute("SELECT finish_reason FROM replies")]
    assert len(reasons) == 9 and "stop" in reasons


def test_a_wrong_key_an_unknown_model_and_no_server_are_one_line_each(qg_server, store, tmp_path, monkeypatch):
    args = ["fixture", "--store", str(store), "--passages", "2", "--generator", "openai", "--ask", "questions"]
    monkeypatch.setenv("OPENAI_API_KEY", "wrong")
    res = synth(*args, "--base-url", qg_server, "--model", "qg", "-o", str(tmp_path / "a.jsonl"))
    assert res.exit_code == 1 and "refused the API key (401)" in res.stderr and "OPENAI_API_KEY" in res.stderr
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    res = synth(*args, "--base-url", qg_server, "--model", "qgg", "-o", str(tmp_path / "b.jsonl"))
    assert res.exit_code == 1 and "does not serve the model 'qgg'" in res.stderr and "qg" in res.stderr
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    res = synth(
        *args,
        "--base-url",
        f"http://127.0.0.1:{closed}/v1",
        "--model",
        "qg",
        "--retries",
        "0",
        "-o",
        str(tmp_path / "c.jsonl"),
    )
    assert res.exit_code == 1 and f"cannot reach http://127.0.0.1:{closed}/v1" in res.stderr
    for name in ("a", "b", "c"):
        assert not (tmp_path / f"{name}.jsonl").exists()
    for res in (
        synth(*args, "-o", str(tmp_path / "d.jsonl")),
        synth(
            *args,
            "--base-url",
            qg_server,
            "--model",
            "qg",
            "--prompt-file",
            str(tmp_path / "none.txt"),
            "-o",
            str(tmp_path / "d.jsonl"),
        ),
    ):
        assert res.exit_code != 0 and "Traceback" not in res.output
    assert "--base-url" in synth(*args, "-o", str(tmp_path / "d.jsonl")).stderr


def scripted_app() -> FastAPI:
    """An endpoint that serves the model 'scripted'; each test adds its chat route."""
    app = FastAPI()

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": "scripted", "object": "model", "created": 0, "owned_by": "t"}]}

    return app


class ScriptedLLM:
    """An OpenAI-compatible chat endpoint whose replies depend on the passage in the prompt, and
    which fails its first requests with a 429 then a 500 (what a loaded hosted API does)."""

    def __init__(self, failures=("429", "500"), always_429=False):
        self.hits = 0
        self.failures = list(failures)
        self.always_429 = always_429
        self.lock = threading.Lock()

    def app(self):
        app = scripted_app()

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            with self.lock:
                self.hits += 1
                failure = "429" if self.always_429 else (self.failures.pop(0) if self.failures else None)
            if failure == "429":
                return JSONResponse(
                    {"error": {"message": "slow down", "type": "rate_limit"}},
                    status_code=429,
                    headers={"retry-after": "0"},
                )
            if failure == "500":
                return JSONResponse({"error": {"message": "overloaded"}}, status_code=500)
            prompt = body["messages"][-1]["content"]
            if "Zanzibar" in prompt:
                content = "Sure! Here are some questions about Zanzibar: what is its capital?"  # no JSON at all
            elif "Ottoline" in prompt:
                content = (
                    '```json\n{"pairs": [{"question": "Who painted the barn?", "answer": "Ottoline"}, '
                    '{"question": "What colour was the barn?", "answer": "bright green"}]}\n```'
                )
            else:
                content = json.dumps(
                    [
                        {"question": "When did the bridge open?", "answer": "1932"},
                        {"question": "Who built the bridge?", "answer": "Ada Brunel"},
                        {"question": "Who built it?", "answer": "Ada Brunel"},
                        {"q": "", "a": "nothing"},
                    ]
                )
            return {
                "id": "c1",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
                ],
                "usage": {
                    "prompt_tokens": len(prompt.split()),
                    "completion_tokens": len(content.split()),
                    "total_tokens": len(prompt.split()) + len(content.split()),
                },
            }

        return app


@pytest.fixture
def documents(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "bridge.md").write_text(
        "# The bridge\n\nThe bridge over the Tarn opened in 1932. Ada Brunel built it from local granite.\n"
    )
    (folder / "barn.md").write_text("# The barn\n\nOttoline painted the barn a pale blue in the spring.\n")
    (folder / "island.md").write_text(
        "# The island\n\nZanzibar lies off the coast; its old town is built of coral stone.\n"
    )
    return folder


def test_retries_malformed_replies_and_unquoted_answers_are_counted_not_fatal(documents, tmp_path, monkeypatch):
    """A 429 and a 500 are retried; a reply in prose is counted as malformed; an answer the
    passage does not quote and a repeated question are dropped; a rerun sends nothing."""
    monkeypatch.setenv("OPENAI_API_KEY", "any")
    llm = ScriptedLLM()
    out = tmp_path / "pairs.jsonl"
    with live_server(llm.app()) as url:
        res = synth(
            "--input",
            str(documents),
            "--generator",
            "openai",
            "--base-url",
            url + "/v1",
            "--model",
            "scripted",
            "--concurrency",
            "1",
            "--per-passage",
            "5",
            "-o",
            str(out),
        )
        assert res.exit_code == 0, res.output
        assert llm.hits == 3 + 2  # three passages, two of the requests retried once each
        rows = read_jsonl(out)
        report = json.loads((tmp_path / "pairs.jsonl.report.json").read_text())
        assert sorted((r["question"], r["answers"]["text"][0]) for r in rows) == [
            ("When did the bridge open?", "1932"),
            ("Who built the bridge?", "Ada Brunel"),
            ("Who painted the barn?", "Ottoline"),
        ]
        for r in rows:
            at = r["answers"]["answer_start"][0]
            assert r["context"][at : at + len(r["answers"]["text"][0])] == r["answers"]["text"][0]
        assert report["generator"]["malformed"] == 1 and report["generator"]["requests"] == 3
        assert report["dropped"] == {"answer_not_in_passage": 1, "near_duplicate_question": 1}
        assert report["generator"]["prompt_tokens"] > 0
        hits = llm.hits
        again = synth(
            "--input",
            str(documents),
            "--generator",
            "openai",
            "--base-url",
            url + "/v1",
            "--model",
            "scripted",
            "--per-passage",
            "5",
            "-o",
            str(tmp_path / "again.jsonl"),
            "--cache",
            str(tmp_path / "pairs.jsonl.cache.sqlite"),
        )
        assert again.exit_code == 0 and llm.hits == hits
        assert read_jsonl(tmp_path / "again.jsonl") == rows


def test_a_rate_limit_that_never_ends_stops_the_run_and_keeps_the_cache(documents, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "any")
    llm = ScriptedLLM(failures=())
    out = tmp_path / "pairs.jsonl"
    with live_server(llm.app()) as url:
        args = [
            "--input",
            str(documents),
            "--generator",
            "openai",
            "--base-url",
            url + "/v1",
            "--model",
            "scripted",
            "--concurrency",
            "1",
            "--retries",
            "1",
            "-o",
            str(out),
        ]
        # a first run with one passage fills the cache with its reply
        assert synth(*args, "--passages", "1").exit_code == 0
        out.unlink()
        llm.always_429 = True
        res = synth(*args)
        assert res.exit_code == 1 and "429" in res.stderr and "--concurrency" in res.stderr
        assert "1 replies received so far are kept" in res.stderr and len(res.stderr.strip().splitlines()) == 1
        assert not out.exists()
        from loraqa.synth.reply_cache import ReplyCache

        assert len(ReplyCache(tmp_path / "pairs.jsonl.cache.sqlite")) == 1


HOSTILE = {  # passage keyword -> (body, what the report must call it)
    "Abacus": (
        '{"choices": [{"message": {"content": "[]"}, "finish_reason": "stop"}], '
        '"usage": {"prompt_tokens": "abc", "completion_tokens": 1}}',
        "usage that is not token counts",
    ),
    "Bellows": ('{"choices": [{"message": {"content": "' + "[" * 30_000 + '"}}]}', "no question-answer pairs in it"),
    "Cistern": ("{not json", "not JSON"),
    "Dovecote": ("<html><body>Bad gateway</body></html>", "not JSON"),
    "Ewer": ("[1, 2, 3]", "not a chat completion (a JSON object)"),
    "Flagon": ('{"choices": [{"message": {"content": {"pairs": []}}}]}', "content that is not text"),
    "Gimlet": ('{"choices": [{"message": {"content": 5}}]}', "content that is not text"),
    "Hassock": ('{"choices": "abc"}', "no choices"),
    "Inkwell": ('{"choices": [{"message": null}]}', "no message"),
    "Jerkin": (
        '{"choices": [{"message": {"content": "[]"}}], "usage": {"prompt_tokens": -1000000000000000000000000000000,'
        ' "completion_tokens": 1}}',
        "usage that is not token counts",
    ),
    "Kirtle": ('{"choices": [{"message": {"content": "' + "x" * 100_000 + '"}}]}', "over 64 KB (--max-reply-kb)"),
    "Lantern": (None, "not whole after 2 s (--timeout)"),  # dripped a byte at a time
}


def hostile_endpoint():
    import asyncio as aio

    from fastapi.responses import Response, StreamingResponse

    app = scripted_app()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        prompt = (await request.json())["messages"][-1]["content"]
        for word, (body, _) in HOSTILE.items():
            if word in prompt and body is None:

                async def drip():
                    for _ in range(40):
                        yield b" "
                        await aio.sleep(0.25)

                return StreamingResponse(drip(), media_type="application/json")
            if word in prompt:
                return Response(body, media_type="application/json")
        content = json.dumps({"pairs": [{"question": "Who mended the kettle?", "answer": "Osric"}]})
        return {
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5},
        }

    return app


def test_hostile_replies_are_counted_as_malformed_never_cached_and_never_fatal(tmp_path, monkeypatch):
    import time

    from loraqa.synth.reply_cache import ReplyCache

    monkeypatch.setenv("OPENAI_API_KEY", "any")
    docs = tmp_path / "docs"
    docs.mkdir()
    for word in [*HOSTILE, "Osric"]:
        (docs / f"{word}.md").write_text(
            f"# {word}\n\n{word} kept the {word.lower()} in the shed. Osric mended the kettle.\n"
        )
    out = tmp_path / "pairs.jsonl"
    with live_server(hostile_endpoint()) as url:
        started = time.monotonic()
        res = synth(
            "--input",
            str(docs),
            "--generator",
            "openai",
            "--base-url",
            url + "/v1",
            "--model",
            "scripted",
            "--concurrency",
            "4",
            "--timeout",
            "2",
            "--max-reply-kb",
            "64",
            "--retries",
            "0",
            "-o",
            str(out),
        )
        took = time.monotonic() - started
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    assert took < 30  # the dripping reply is cut at its deadline, not after 40 x 0.25 s per read
    report = json.loads((tmp_path / "pairs.jsonl.report.json").read_text())["generator"]
    want: dict = {}
    for _, why in HOSTILE.values():
        want[why] = want.get(why, 0) + 1
    assert report["malformed_reasons"] == want and report["malformed"] == len(HOSTILE)
    assert len(read_jsonl(out)) >= 1  # the good passages still give their pairs
    cache = ReplyCache(tmp_path / "pairs.jsonl.cache.sqlite")
    assert len(cache) == 2  # the good replies only (Bellows' reply is well formed: its content is not pairs)


def test_a_cache_poisoned_by_an_older_version_is_read_without_crashing(tmp_path, monkeypatch):
    import sqlite3

    from loraqa.synth.replies import DEFAULT_PROMPT, render_prompt
    from loraqa.synth.reply_cache import reply_key

    monkeypatch.setenv("OPENAI_API_KEY", "any")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "osric.md").write_text("# Osric\n\nOsric mended the kettle.\n")
    text = "Osric mended the kettle."
    cache = tmp_path / "old.sqlite"
    db = sqlite3.connect(cache)  # what an older version wrote: replies cached before they were checked
    db.execute(
        "CREATE TABLE replies (key TEXT PRIMARY KEY, content TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, "
        "completion_tokens INTEGER NOT NULL)"
    )
    key = reply_key("scripted", [{"role": "user", "content": render_prompt(DEFAULT_PROMPT, text, 3)}])
    db.execute("INSERT INTO replies VALUES (?, ?, ?, ?)", (key, "[" * 100_000, "abc", 1))
    db.commit()
    db.close()
    with live_server(hostile_endpoint()) as url:
        res = synth(
            "--input",
            str(docs),
            "--generator",
            "openai",
            "--base-url",
            url + "/v1",
            "--model",
            "scripted",
            "--cache",
            str(cache),
            "-o",
            str(tmp_path / "out.jsonl"),
        )
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    assert [r["answers"]["text"][0] for r in read_jsonl(tmp_path / "out.jsonl")] == ["Osric"]  # asked again


def test_synth_reads_input_files_within_the_same_budgets_as_collection_add(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "any")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "osric.md").write_text("# Osric\n\nOsric mended the kettle.\n")
    (docs / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (docs / "loop").symlink_to(docs)
    with live_server(hostile_endpoint()) as url:
        res = synth(
            "--input",
            str(docs),
            "--generator",
            "openai",
            "--base-url",
            url + "/v1",
            "--model",
            "scripted",
            "-o",
            str(tmp_path / "out.jsonl"),
        )
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert len(errors) == 2 and any("deep.json: JSON nested too deeply" in e for e in errors)
    assert any("loop: skipped, a link to a folder: not followed" in e for e in errors)
    assert [r["answers"]["text"][0] for r in read_jsonl(tmp_path / "out.jsonl")] == ["Osric"]
