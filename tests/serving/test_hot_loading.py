"""Loading adapters into a running server: only from its adapter root, only regular files, no
pickle unless the command line allowed it, every file validated before the engine sees it, and a
refused load leaves the loaded adapters answering as before."""

from __future__ import annotations

import json
import os
import shutil
import threading

import pytest

from helpers import local_client

ADMIN = {"Authorization": "Bearer admin"}


@pytest.fixture
def root(tmp_path, two_adapters):
    """An adapter root holding a copy of the 'titles' adapter folder."""
    folder = tmp_path / "root"
    shutil.copytree(two_adapters["titles"] / "adapter", folder / "titles")
    return folder


@pytest.fixture
def server(two_adapters, root):
    from loraqa.inference.answerer import Answerer
    from loraqa.serving.app import create_app
    from loraqa.serving.options import ServeOptions

    answerer = Answerer({"answers": str(two_adapters["answers"])}, dtype="fp32")
    with local_client(
        create_app(answerer, ServeOptions(admin_key="admin", adapter_root=root, limits=_limits(max_adapters=3)))
    ) as c:
        yield c


def _limits(**kw):
    from loraqa.serving.limits import ServerLimits

    return ServerLimits(**kw)


def load(client, name, path):
    return client.post("/v1/adapters", json={"name": name, "path": str(path)}, headers=ADMIN)


def still_answers(client, two_adapters):
    row = two_adapters["rows"][0]
    res = client.post("/v1/answer", json={"question": row["question"], "context": row["context"]}, headers=ADMIN)
    return res.status_code == 200 and res.json()["answer"] == row["answers"]["text"][0]


def test_paths_outside_the_root_get_the_same_answer_as_missing_ones(server, root, tmp_path, two_adapters):
    outside = tmp_path / "outside"
    shutil.copytree(two_adapters["titles"] / "adapter", outside)
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "empty").mkdir()
    answers = {
        what: load(server, "x", path)
        for what, path in {
            "missing": "nothing-here",
            "absolute outside": outside,
            "dot-dot": "../outside",
            "symlink out": "link",
            "holds no adapter": "empty",
            "the filesystem root": "/",
        }.items()
    }
    for what, res in answers.items():
        assert res.status_code == 404, (what, res.text)
    messages = {res.json()["detail"].split("'")[0] for res in answers.values()}
    assert messages == {"no adapter at "}  # nothing tells a missing folder from one that exists elsewhere
    assert load(server, "ok", "titles").status_code == 201


def test_a_file_linked_from_outside_the_root_is_refused(server, root, tmp_path, two_adapters):
    secret = tmp_path / "elsewhere.json"
    secret.write_text(json.dumps({"no_answer_threshold": None}))
    (root / "titles" / "loraqa_calibration.json").symlink_to(secret)
    res = load(server, "x", "titles")
    assert res.status_code == 404 and "no adapter at 'titles'" in res.text


def test_a_fifo_named_like_the_weights_is_refused_and_answering_goes_on(server, root, two_adapters):
    (root / "titles" / "adapter_model.safetensors").unlink()
    os.mkfifo(root / "titles" / "adapter_model.safetensors")
    result = {}
    thread = threading.Thread(target=lambda: result.update(res=load(server, "fifo", "titles")), daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive(), "the load blocked on the FIFO"
    assert result["res"].status_code == 400 and "not a regular file" in result["res"].text
    assert still_answers(server, two_adapters)


def test_pickle_beside_safetensors_is_refused_without_allow_pickle(server, root, two_adapters):
    (root / "titles" / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    res = load(server, "p", "titles")
    assert res.status_code == 400 and "pickle" in res.text and "adapter_model.bin" in res.text
    assert still_answers(server, two_adapters)


@pytest.mark.parametrize(
    "file,content,message",
    [
        ("loraqa_calibration.json", {"no_answer_threshold": "0.5"}, "is damaged"),
        ("loraqa_calibration.json", "{not json", "is damaged"),
        ("loraqa_domain.json", {"tfidf": {"centroid": {"x": "big"}, "idf": {}, "unknown_idf": 1.0}}, "is damaged"),
    ],
)
def test_a_damaged_calibration_or_profile_is_refused_at_load(server, root, two_adapters, file, content, message):
    """Before, a string threshold killed the batcher at the first answer; now it never loads."""
    path = root / "titles" / file
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    res = load(server, "bad", "titles")
    assert res.status_code == 400 and message in res.text
    assert "bad" not in [m["id"] for m in server.get("/v1/models", headers=ADMIN).json()["data"]]
    assert still_answers(server, two_adapters) and server.get("/health").status_code == 200


def test_the_adapter_count_is_limited(server, root, two_adapters):
    assert load(server, "t1", "titles").status_code == 201
    assert load(server, "t2", "titles").status_code == 201
    res = load(server, "t3", "titles")
    assert res.status_code == 409 and "most allowed" in res.text
    assert server.delete("/v1/adapters/t1", headers=ADMIN).status_code == 200
    assert load(server, "t3", "titles").status_code == 201


def test_hot_loading_is_off_without_an_adapter_root(answerer):
    from loraqa.serving.app import create_app
    from loraqa.serving.options import ServeOptions

    with local_client(create_app(answerer, ServeOptions(admin_key="admin"))) as c:
        res = load(c, "x", "/tmp")
    assert res.status_code == 403 and "adapter root" in res.text


@pytest.mark.parametrize("name", ["base", "auto", "__base__", "has space", "../x", "x" * 65])
def test_reserved_and_odd_names_are_refused(server, name):
    res = load(server, name, "titles")
    assert res.status_code in (400, 422), res.text
    # the root's own adapter ('titles') is listed too: the root is a library of adapters loaded on demand
    assert [m["id"] for m in server.get("/v1/models", headers=ADMIN).json()["data"]] == [
        "answers",
        "titles",
        "base",
        "auto",
    ]


def test_eval_takes_allow_pickle_from_the_command_line_only(two_adapters, tmp_path):
    """An adapter's own saved config saying allow_pickle: true no longer lets its pickle in."""
    from helpers import SQUAD_V1, run_cli

    run = tmp_path / "run"
    shutil.copytree(two_adapters["answers"], run, ignore=shutil.ignore_patterns("checkpoints"))
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("allow_pickle: false", "allow_pickle: true"))
    (run / "adapter" / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    res = run_cli("eval", str(run), "--data", str(SQUAD_V1), "--limit", "2", "--output", str(tmp_path / "ev"))
    assert res.exit_code == 1 and "pickle" in res.stderr and "--allow-pickle" in res.stderr
    assert not (tmp_path / "ev").exists()
