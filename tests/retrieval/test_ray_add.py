"""`collection add --ray`: files read, cut and embedded by Ray Data workers (two, on a local Ray
instance) and written by the command. What a user would see go wrong: a collection that
searches differently from one added in one process, a broken file stopping the others or
vanishing without a line, a rerun that reads everything again."""

from __future__ import annotations

import json

import pytest

from helpers import SQUAD_V1, run_cli

pytest.importorskip("ray", reason="pip install 'loraqa[ray]'")
pytestmark = pytest.mark.ray

QUERIES = ["Who discovered radium?", "What does the Amazon river carry?", "How do plants make sugar?"]


@pytest.fixture(scope="module")
def local_ray():
    """One local instance for the module (an add finding one running uses it)."""
    import ray

    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}}
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory, squad_rows):
    """One Markdown file per article of the fixture, and one PDF that is not one."""
    folder = tmp_path_factory.mktemp("articles")
    articles: dict[str, list[str]] = {}
    for row in squad_rows:
        if row["context"] not in articles.setdefault(row["title"], []):
            articles[row["title"]].append(row["context"])
    for title, paragraphs in articles.items():
        (folder / f"{title.replace(' ', '_')}.md").write_text(f"# {title}\n\n" + "\n\n".join(paragraphs) + "\n")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\nnot a pdf at all")
    return folder


def hits(store: str, name: str, mode: str) -> list[list[tuple]]:
    out = []
    for query in QUERIES:
        res = run_cli("collection", "search", name, query, "--store", store, "--mode", mode, "-k", "4", "--json")
        assert res.exit_code == 0, res.output
        out.append([(h["document"], h["text"], round(h["score"], 4)) for h in map(json.loads, res.stdout.splitlines())])
    return out


def test_an_add_on_ray_searches_exactly_like_one_in_one_process(local_ray, folder, store_spec, minilm):
    local = run_cli("collection", "add", "local", str(folder), "--store", store_spec, "--embedder", minilm)
    spread = run_cli("collection", "add", "spread", str(folder), "--store", store_spec, "--embedder", minilm, "--ray")
    assert local.exit_code == spread.exit_code == 1  # the broken PDF is one line, the rest goes in
    assert local.stderr.count("broken.pdf") == spread.stderr.count("broken.pdf") == 1
    summary = local.stderr.strip().splitlines()[-1].replace("local:", "")
    assert summary == spread.stderr.strip().splitlines()[-1].replace("spread:", "") and "0 added" not in summary
    for mode in ("lexical", "dense", "hybrid"):
        assert hits(store_spec, "spread", mode) == hits(store_spec, "local", mode), mode

    again = run_cli("collection", "add", "spread", str(folder), "--store", store_spec, "--ray")
    files = len(list(folder.iterdir())) - 1  # the broken one is read again: it never went in
    assert f"({files} files unchanged since the last add)" in again.stderr and "0 added" in again.stderr


def test_ray_flags_without_ray_are_one_line(tmp_path):
    res = run_cli("collection", "add", "c", str(SQUAD_V1), "--store", str(tmp_path / "s"), "--ray-address", "auto")
    assert res.exit_code == 2 and "--ray-address is for adding on Ray: add --ray" in res.stderr
    assert not (tmp_path / "s").exists()
