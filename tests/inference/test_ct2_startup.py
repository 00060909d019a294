"""The CTranslate2 path starts light: `predict`, `serve` and `mcp` with `--engine ctranslate2`
import neither torch nor transformers (the exported tokenizer.json is read by the `tokenizers`
library), an adapter root of exports is a library like one of LoRA adapters, and the servers say
how long they took to become ready. Every process here is a real one, started as a user would."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import httpx
import pytest

from helpers import run_cli

HEAVY = ("torch", "transformers", "peft")


@pytest.fixture(scope="module")
def exports(two_adapters, tmp_path_factory):
    """An adapter root of int8 exports: 'answers' (twice, as a1 and a2) and 'titles' (t1)."""
    root = tmp_path_factory.mktemp("ct2-root")
    for name, source in (("a1", "answers"), ("t1", "titles")):
        res = run_cli("export", str(two_adapters[source]), "--output", str(root / name))
        assert res.exit_code == 0, res.output
    shutil.copytree(root / "a1", root / "a2")
    return root


def heavy_imports(importtime_log: str) -> set[str]:
    """The heavy packages a process imported, from what `python -X importtime` wrote."""
    return {m.group(1) for m in re.finditer(r"\|\s+(\w+)$", importtime_log, re.M) if m.group(1) in HEAVY}


def test_the_exported_tokenizer_reads_text_as_transformers_does(exports, squad_rows):
    """Read without transformers, an export's tokenizer gives the same ids, offsets and decoded
    answers: otherwise windows, answer offsets and the answers themselves would shift."""
    from transformers import AutoTokenizer

    from loraqa.modeling.files import load_tokenizer_file

    light, full = load_tokenizer_file(exports / "a1"), AutoTokenizer.from_pretrained(exports / "a1")
    assert light.eos_token_id == full.eos_token_id and len(light) == len(full)
    texts = [r["context"] for r in squad_rows] + [r["question"] for r in squad_rows] + ["Zürich's café, isn't it ?"]
    for text in texts:
        for special in (True, False):
            assert (
                light(text, add_special_tokens=special)["input_ids"]
                == full(text, add_special_tokens=special)["input_ids"]
            )
        assert light(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"] == [
            tuple(o) for o in full(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        ]
        ids = full(text)["input_ids"]
        assert light.decode(ids, skip_special_tokens=True) == full.decode(ids, skip_special_tokens=True)
        assert light.decode(ids) == full.decode(ids)
        tokens = full.convert_ids_to_tokens(ids)
        assert light.convert_ids_to_tokens(ids) == tokens and light.convert_tokens_to_ids(tokens) == ids


def test_predict_with_ctranslate2_imports_neither_torch_nor_transformers(exports, two_adapters):
    row = two_adapters["rows"][0]
    res = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "loraqa",
            "predict",
            "-a",
            str(exports / "a1"),
            "--engine",
            "ctranslate2",
            "-q",
            row["question"],
            "--context",
            row["context"],
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == row["answers"]["text"][0]
    assert heavy_imports(res.stderr) == set()
    # the PyTorch engine does import them (the check above can see them)
    res = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "loraqa",
            "predict",
            "-a",
            str(two_adapters["answers"]),
            "-q",
            row["question"],
            "--context",
            row["context"],
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0 and {"torch", "transformers"} <= heavy_imports(res.stderr)


def test_a_root_of_exports_is_a_library_served_without_torch(exports, two_adapters, tmp_path):
    """`serve --engine ctranslate2 --adapter-root` with nothing loaded at start: each export is
    loaded when a request names it, one stays attached (--max-loaded 1), every answer comes from
    the export it named, and the process never imports torch or transformers."""
    row = two_adapters["rows"][0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "server.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-X",
                "importtime",
                "-m",
                "loraqa",
                "serve",
                "--engine",
                "ctranslate2",
                "--adapter-root",
                str(exports),
                "--max-loaded",
                "1",
                "--port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start within 60 s"
            time.sleep(0.1)

        async def ask(names):
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                return await asyncio.gather(
                    *(
                        client.post(
                            "/v1/answer", json={"question": row["question"], "context": row["context"], "adapter": n}
                        )
                        for n in names
                    )
                )

        names = ["a1", "t1", "a2", "t1", "a1", "a2"]
        got = asyncio.run(ask(names))
        assert [r.status_code for r in got] == [200] * len(names)
        want = {"a": row["answers"]["text"][0], "t": row["title"]}
        assert [(r.json()["adapter"], r.json()["answer"]) for r in got] == [(n, want[n[0]]) for n in names]
        models = {m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]}
        assert {"a1", "a2", "t1"} <= models and "base" not in models
        metrics = httpx.get(f"{url}/metrics").text
        loads = sum(float(v) for v in re.findall(r"^loraqa_adapter_loads_total\{[^}]*\} (\S+)$", metrics, re.M))
        evictions = sum(float(v) for v in re.findall(r"^loraqa_adapter_evictions_total\{[^}]*\} (\S+)$", metrics, re.M))
        assert loads >= 3 and evictions == loads - 1  # one slot: every load but the first made room
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    assert heavy_imports(text) == set()
    assert re.search(r"server ready \d+\.\d s after start \(no adapter yet; engine ctranslate2", text)


def test_the_mcp_server_on_ctranslate2_answers_without_torch(exports, two_adapters, tmp_path):
    from mcp import Client, StdioServerParameters

    row = two_adapters["rows"][1]
    log = tmp_path / "mcp.log"
    command = (
        f"exec {sys.executable} -X importtime -m loraqa mcp --engine ctranslate2 -a answers={exports / 'a1'} 2>{log}"
    )
    params = StdioServerParameters(command="sh", args=["-c", command], env={**os.environ, "OMP_NUM_THREADS": "1"})

    async def session():
        async with Client(params, read_timeout_seconds=60) as client:
            return await client.call_tool("answer_question", {"question": row["question"], "context": row["context"]})

    started = time.monotonic()
    result = asyncio.run(session())
    assert not result.is_error and result.structured_content["answer"] == row["answers"]["text"][0]
    text = log.read_text()
    assert heavy_imports(text) == set()
    ready = float(re.search(r"MCP server ready (\d+\.\d) s after start", text).group(1))
    assert ready <= time.monotonic() - started  # said from the process's own start, not made up


def test_exports_of_another_tokenizer_are_refused_beside_the_first(exports, two_adapters, tmp_path):
    """Requests are read with the first export's tokenizer: an export whose vocabulary differs
    would get ids it does not know and answer garbage with no error, so it is refused when it is
    attached, naming both folders. The same tokenizer saved with other whitespace still serves."""
    import json

    from loraqa.errors import LoraqaError
    from loraqa.inference.answerer import Answerer

    respaced, other = tmp_path / "respaced", tmp_path / "other"
    for folder in (respaced, other):
        shutil.copytree(exports / "a1", folder)
    data = json.loads((exports / "a1" / "tokenizer.json").read_text())
    (respaced / "tokenizer.json").write_text(json.dumps(data, indent=4))
    data["added_tokens"].append(
        {**data["added_tokens"][-1], "id": len(data["added_tokens"]) + 90000, "content": "<clinic>"}
    )
    (other / "tokenizer.json").write_text(json.dumps(data))

    row = two_adapters["rows"][0]
    answerer = Answerer({"a1": str(exports / "a1"), "respaced": str(respaced)}, engine="ctranslate2")
    got = answerer.answer([{"question": row["question"], "context": row["context"], "adapter": "respaced"}])
    assert got[0].answer == row["answers"]["text"][0]
    with pytest.raises(LoraqaError, match=r"other was exported with another tokenizer than .*a1"):
        Answerer({"a1": str(exports / "a1"), "other": str(other)}, engine="ctranslate2")
