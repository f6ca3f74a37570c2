"""The OpenAI-surface probe against hotswap and vLLM's own OpenAI server, side by side
(same engine build, model and adapter). Off by default (``-m peer`` runs it: it starts
a second engine); it prints a Markdown table of where the two differ and writes it to
``$HOTSWAP_HOME/peer-probe.md``. It fails only if hotswap answers a probe with a 5xx, or
refuses something vLLM serves without saying why in a 4xx."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hotswap.server.config import home_from_env
from support.openai_probe import run, table
from support.server import ServerInfo, free_port, tail

pytestmark = [pytest.mark.peer, pytest.mark.engine]


@pytest.fixture(scope="module")
def vllm_server(base_model_dir: Path, lora_adapters: dict[str, Path],
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("vllm-peer") / "vllm.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
           "--model", str(base_model_dir), "--served-model-name", "smollm2",
           "--dtype", "float32", "--max-model-len", "2048", "--port", str(port),
           "--enable-lora", "--max-loras", "4", "--max-lora-rank", "16",
           "--lora-modules", f"lora-a={lora_adapters['lora-a']}"]
    env = {**os.environ, "VLLM_PLUGINS": "", "VLLM_CPU_KVCACHE_SPACE": "1"}
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM's server exited:\n{tail(log_path)}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"vLLM's server not up:\n{tail(log_path)}")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.mark.parametrize("model", ["smollm2", "lora-a"])
def test_probe_side_by_side(server: ServerInfo, vllm_server: str, model: str) -> None:
    ours = run(server.url, model, server.api_key)
    theirs = run(vllm_server, model)
    report = table(ours, theirs)
    out = home_from_env() / f"peer-probe-{model}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report + "\n")
    print(f"\nmodel {model}\n{report}")
    for name, outcome in ours.items():
        assert outcome.status < 500, (name, outcome)
        if theirs[name].status < 400 and outcome.status >= 400:
            assert outcome.summary, name  # a refusal that says why
