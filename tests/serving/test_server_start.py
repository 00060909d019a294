"""Starting the servers as a user does: keys from the environment (not visible in `ps`), `serve`
without the MCP SDK installed, and `mcp` without it saying how to install it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx

# the CLI in a fresh interpreter where the `mcp` package cannot be imported (as if not installed)
WITHOUT_MCP = (
    "import sys; sys.modules['mcp'] = None; sys.argv = ['loraqa', *sys.argv[1:]]; from loraqa.cli import main; main()"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_runs_without_mcp_and_takes_its_keys_from_the_environment(two_adapters):
    port = free_port()
    env = {**os.environ, "LORAQA_API_KEY": "ask-key", "LORAQA_ADMIN_KEY": "admin-key", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", WITHOUT_MCP, "serve", "-a", f"answers={two_adapters['answers']}", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if proc.poll() is not None:
                    raise AssertionError(proc.stderr.read()[-2000:]) from None
                time.sleep(0.2)
        with open(f"/proc/{proc.pid}/cmdline", "rb") as fh:
            assert b"ask-key" not in fh.read()  # what `ps` shows
        row = two_adapters["rows"][0]
        q = {"question": row["question"], "context": row["context"]}
        assert httpx.post(f"{url}/v1/answer", json=q).status_code == 401
        ok = httpx.post(f"{url}/v1/answer", json=q, headers={"Authorization": "Bearer ask-key"}, timeout=30)
        assert ok.status_code == 200 and ok.json()["answer"] == row["answers"]["text"][0]
        unload = {"Authorization": "Bearer ask-key"}
        assert httpx.delete(f"{url}/v1/adapters/answers", headers=unload).status_code == 401
        admin = {"Authorization": "Bearer admin-key"}
        assert httpx.delete(f"{url}/v1/adapters/answers", headers=admin, timeout=30).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_mcp_without_its_package_says_how_to_install_it(two_adapters):
    res = subprocess.run(
        [sys.executable, "-c", WITHOUT_MCP, "mcp", "-a", f"answers={two_adapters['answers']}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "needs the 'mcp' package; install it with `pip install 'loraqa[mcp]'`" in res.stderr
