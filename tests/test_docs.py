"""The documentation site: it builds with no broken link or orphan page, its pages written from
the code are up to date, and the commands its tutorials mark as runnable run. What a user would
meet otherwise: a tutorial command that fails on its first line, a reference page naming an
option that no longer exists, a link that leads nowhere."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SQUAD_V1

ROOT = Path(__file__).parents[1]
TUTORIALS = [
    "first-adapter.md",
    "documents-to-answers.md",
    "agents.md",
    "domain-adapter.md",
]  # in the order a reader follows them
RUNNABLE = re.compile(r"<!-- runnable -->\s*```bash\n(.*?)```", re.S)


def test_the_site_builds_strictly(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()


def test_pages_written_from_the_code_are_up_to_date():
    """The command line, config keys and HTTP API pages, the home page and the changelog."""
    res = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "docs_reference.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]


def test_every_tutorial_is_in_the_nav_with_its_runnable_blocks_found():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for name in TUTORIALS:
        assert f"tutorials/{name}" in nav
        assert RUNNABLE.findall((ROOT / "docs" / "tutorials" / name).read_text(encoding="utf-8")), name


@pytest.mark.parametrize("upto", [len(TUTORIALS)])
def test_the_tutorials_runnable_commands_run(tmp_path, nodrop_model_dir, question_writer, two_adapters, upto):
    """Each marked block runs in bash -e, in one working directory, tutorial after tutorial (the
    documents tutorial asks the first one's adapter), with MODEL and DATA set as the first
    tutorial tells the reader to, and the domain-adapter tutorial's writer and reader trained on
    the fixture until they write and answer its questions (a 20-step writer writes nothing a
    reader confirms)."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MODEL": str(nodrop_model_dir),
        "DATA": str(SQUAD_V1),
        "DOCS": str(SQUAD_V1),
        "QG": str(question_writer["run"]),
        "READER": str(two_adapters["answers"]),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
    }
    for name in TUTORIALS[:upto]:
        for block in RUNNABLE.findall((ROOT / "docs" / "tutorials" / name).read_text(encoding="utf-8")):
            res = subprocess.run(
                ["bash", "-e", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
            )
            assert res.returncode == 0, f"{name}:\n{block}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    assert (tmp_path / "runs" / "first" / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "collections").is_dir()
    assert (tmp_path / "runs" / "handbook" / "adapter" / "adapter_config.json").is_file()
