"""deploy/docker/ and the rendered overlays pass hadolint and checkov, with every skipped
check justified beside it; the images run `hotswap serve` as a non-root user with a
health check on a route the server has."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from support.app import make_app
from support.k8s import DEPLOY, DOCKERFILES, OVERLAYS, dockerfile_env, render_text, tool

REPO = DEPLOY.parent


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile: Path) -> None:
    done = subprocess.run([tool("hadolint"), "--no-color", str(dockerfile)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = dockerfile.read_text().splitlines()
    for n, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert lines[n - 1].startswith("# ") and "hadolint" not in lines[n - 1], (
                f"{dockerfile.name}:{n + 1}: say why above the ignore")


def test_checkov(tmp_path: Path) -> None:
    files = []
    for overlay in OVERLAYS:
        rendered = tmp_path / f"{overlay}.yaml"
        rendered.write_text(render_text(overlay))
        files += ["-f", str(rendered)]
    for dockerfile in DOCKERFILES:
        files += ["-f", str(dockerfile)]
    done = subprocess.run([tool("checkov"), "--config-file", str(DEPLOY / ".checkov.yaml"),
                           *files], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "Failed checks: 0" in done.stdout


def test_every_skipped_check_says_why() -> None:
    config_lines = (DEPLOY / ".checkov.yaml").read_text().splitlines()
    skips = yaml.safe_load("\n".join(config_lines))["skip-check"]
    for check in skips:
        [n] = [i for i, line in enumerate(config_lines) if line.strip() == f"- {check}"]
        assert config_lines[n - 1].strip().startswith("#"), f"{check}: no reason above it"
    for overlay in OVERLAYS:
        for annotation in re.findall(r"checkov\.io/skip\d+: (.*)", render_text(overlay)):
            check, _, reason = annotation.partition("=")
            assert re.fullmatch(r"CKV2?_\w+", check) and len(reason.split()) >= 3, annotation


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_shape(dockerfile: Path, tmp_path: Path) -> None:
    text = dockerfile.read_text()
    stages = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert len(stages) >= 2, "multi-stage: the build tools stay out of the final image"
    for base in stages:
        assert re.fullmatch(r"[\w./-]+:\d[\w.-]*(@sha256:[0-9a-f]{64})?", base), (
            f"{base}: pin the base image by exact version tag or digest")
    assert re.search(r'^ENTRYPOINT \["hotswap", "serve"\]$', text, flags=re.M)
    [user] = re.findall(r"^USER (\S+)$", text, flags=re.M)
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) > 0
    assert text.rindex("USER ") > text.rindex("FROM ")  # the final stage runs as it
    [health] = re.findall(r"^\s+CMD \[.*http://127\.0\.0\.1:[^/]+(/\w+)", text, flags=re.M)
    assert health in {route.path for route in make_app(tmp_path).routes}  # type: ignore[attr-defined]
    env = dockerfile_env(dockerfile)
    assert env["HOTSWAP_HOST"] == "0.0.0.0"
    # Everything written lands in the volumes (a read-only root filesystem works).
    volumes = re.findall(r'^VOLUME \[(.*)\]$', text, flags=re.M)
    [declared] = volumes
    writable = {v.strip(' "') for v in declared.split(",")}
    assert env["HOTSWAP_HOME"] in writable and "/tmp" in writable
    for var in ("HOME", "XDG_CACHE_HOME", "HF_HOME"):
        assert env[var].startswith(env["HOTSWAP_HOME"]), var


def test_cpu_image_serves_the_bundled_model_it_prepares() -> None:
    text = (DEPLOY / "docker" / "Dockerfile.cpu").read_text()
    env = dockerfile_env(DEPLOY / "docker" / "Dockerfile.cpu")
    assert "hotswap prepare-model" in text
    assert f"COPY --from=build /opt/model {env['HOTSWAP_MODEL']}" in text
    assert '".[cpu]"' in text and '".[gpu]"' in (DEPLOY / "docker" / "Dockerfile.gpu").read_text()


def test_dockerignore_sends_only_the_package() -> None:
    lines = [line for line in (REPO / ".dockerignore").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines[0] == "*"
    kept = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert kept == {"pyproject.toml", "README.md", "server", "adapters", "clients"}
    for dockerfile in DOCKERFILES:
        copied = set(re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile.read_text(),
                                flags=re.M))
        sources = {s.rstrip("/") for group in copied for s in group.split()}
        assert sources <= kept, sources - kept
