"""deploy/: the Serve config, the KubeRay RayService and the Dockerfile a cluster user starts
from, checked against Ray's own config schema and against the commands and extras they name
(a renamed flag or extra would otherwise break them only on the user's cluster)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib
import yaml

pytest.importorskip("ray", reason="pip install 'loraqa[ray]'")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROJECT = DEPLOY.parent


def serve_schema(text: str):
    from ray.serve.schema import ServeDeploySchema

    return ServeDeploySchema.model_validate(yaml.safe_load(text))


@pytest.mark.parametrize(
    "config",
    [
        (DEPLOY / "serve.yaml").read_text(),
        yaml.safe_load((DEPLOY / "rayservice.yaml").read_text())["spec"]["serveConfigV2"],
    ],
    ids=["serve.yaml", "rayservice.yaml"],
)
def test_the_serve_configs_validate_and_build_the_app(config, monkeypatch):
    from ray.serve import Application

    from loraqa.serving import ray_app

    [app] = serve_schema(config).applications
    assert app.import_path == "loraqa.serving.ray_app:app_builder"
    assert {d.name for d in app.deployments} == {ray_app.MODEL_DEPLOYMENT, ray_app.INGRESS_DEPLOYMENT}
    monkeypatch.setenv("LORAQA_API_KEY", "from-the-secret")
    models, options, layout = ray_app.from_args(app.args)
    assert options.adapter_root == "/mnt/adapters" and options.api_key == "from-the-secret"
    assert models.base_model == "/mnt/models/flan-t5-base" and layout.replica_cpus == 2
    assert isinstance(ray_app.app_builder(app.args), Application)


def test_a_config_with_an_unknown_arg_is_refused_in_one_line():
    from loraqa.errors import UsageError
    from loraqa.serving.ray_app import from_args

    with pytest.raises(UsageError, match="unknown args in the Serve config: adapter_rot"):
        from_args({"adapter_rot": "/mnt/adapters"})
    with pytest.raises(UsageError, match="limits"):
        from_args({"limits": {"max_contxt_chars": 5}})


def test_the_rayservice_runs_the_image_the_dockerfile_builds():
    spec = yaml.safe_load((DEPLOY / "rayservice.yaml").read_text())
    assert (spec["apiVersion"], spec["kind"]) == ("ray.io/v1", "RayService")
    cluster = spec["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    images = {c["image"] for pod in pods for c in pod["spec"]["containers"]}
    assert images == {"loraqa:latest"} and "-t loraqa:latest" in (DEPLOY / "Dockerfile").read_text()
    for pod in pods:  # every pod sees the adapter root at the path the config names
        [container] = pod["spec"]["containers"]
        assert "/mnt/adapters" in {m["mountPath"] for m in container["volumeMounts"]}
    extra = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["ray"]
    low, high = re.search(r"ray\[[^\]]+\]>=([\d.]+),<(\d+)", " ".join(extra)).groups()
    version = tuple(int(p) for p in cluster["rayVersion"].split("."))
    assert tuple(int(p) for p in low.split(".")) <= version < (int(high),)


def test_the_dockerfile_installs_real_extras_and_runs_real_flags():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    extras = set(tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = set(re.search(r'pip install "\.\[([^\]]+)\]"', dockerfile).group(1).split(","))
    assert named <= extras and "ray" in named
    torch_pin = re.search(r"TORCH\s*\?=\s*(\S+)", (PROJECT / "Makefile").read_text()).group(1)
    assert f'"{torch_pin}"' in dockerfile  # the same CPU torch the Makefile and CI install
    command = yaml.safe_load(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    assert command[:3] == ["loraqa", "serve", "--ray"]
    from helpers import run_cli

    usage = run_cli("serve", "--help").stdout
    for flag in (arg for arg in command if arg.startswith("--")):
        assert flag in usage, f"the Dockerfile runs `loraqa serve {flag}`, which serve does not take"


def test_the_image_builds_where_a_container_runtime_runs():
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True).returncode != 0:
        pytest.skip("no container runtime running here; the steps it runs are checked above")
    built = subprocess.run(
        [docker, "build", "-f", str(DEPLOY / "Dockerfile"), "-t", "loraqa:test", str(PROJECT)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    helped = subprocess.run([docker, "run", "--rm", "loraqa:test", "loraqa", "serve", "--help"], capture_output=True)
    assert helped.returncode == 0 and b"--ray" in helped.stdout
