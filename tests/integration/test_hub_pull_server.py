"""Hub pulls on the real server: ``adapterctl pull`` and ``--hub-autoload`` against a local
fake Hugging Face Hub (the server's huggingface_hub client, real HTTP), outputs compared
with PEFT token for token, and a download that breaks off leaving nothing behind."""

from __future__ import annotations

import concurrent.futures
import subprocess
from pathlib import Path

import httpx
import pytest
from support import clients
from support.fake_hub import FakeHub
from support.peft_ref import make_lora_adapter, peft_greedy
from support.server import ServerInfo

pytestmark = pytest.mark.engine

PROMPT = "My favourite recipe starts with"
MAX_TOKENS = 10


def adapterctl(server: ServerInfo, *args: str) -> subprocess.CompletedProcess[str]:
    return clients.adapterctl(server.url, *args, api_key=server.api_key)


def greedy(server: ServerInfo, model: str, ids: list[int]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/completions", timeout=300, headers=server.headers,
                      json={
        "model": model, "prompt": ids, "max_tokens": MAX_TOKENS, "temperature": 0,
        "return_token_ids": True})


def token_ids(resp: httpx.Response) -> list[int]:
    assert resp.status_code == 200, resp.text
    ids: list[int] = resp.json()["choices"][0]["token_ids"]
    return ids


@pytest.fixture(scope="module")
def prompt_ids(base_model_dir: Path) -> list[int]:
    return clients.tokenize(base_model_dir, PROMPT)


@pytest.fixture(scope="module")
def hub_adapter(base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lora_adapter(base_model_dir, tmp_path_factory.mktemp("hub") / "lora",
                             rank=8, target_modules=["q_proj", "k_proj", "up_proj"], seed=5)


@pytest.fixture(scope="module")
def expected(base_model_dir: Path, hub_adapter: Path, prompt_ids: list[int]) -> list[int]:
    ids: list[int] = peft_greedy(base_model_dir, hub_adapter, [prompt_ids], MAX_TOKENS)[0]
    return ids


def test_adapterctl_pull_serves_like_peft(server: ServerInfo, fake_hub: FakeHub,
                                          hub_adapter: Path, expected: list[int],
                                          prompt_ids: list[int]) -> None:
    repo = fake_hub.add("testorg/recipe-lora", hub_adapter)
    out = adapterctl(server, "pull", "testorg/recipe-lora")
    assert out.returncode == 0, out.stderr
    assert "stored testorg--recipe-lora:latest -> " in out.stdout
    assert f"hub:testorg/recipe-lora@{repo.commit}" in out.stdout
    try:
        assert token_ids(greedy(server, "testorg--recipe-lora", prompt_ids)) == expected
        assert expected != token_ids(greedy(server, server.base_name, prompt_ids))
    finally:
        assert adapterctl(server, "delete", "testorg--recipe-lora").returncode == 0


def test_autoload_concurrent_first_requests(server: ServerInfo, fake_hub: FakeHub,
                                            hub_adapter: Path, expected: list[int],
                                            prompt_ids: list[int]) -> None:
    fake_hub.add("testorg/auto-lora", hub_adapter)
    fake_hub.delay_s = 0.5  # the downloads would overlap if there were several
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: greedy(server, "testorg/auto-lora",
                                                     prompt_ids), range(4)))
    finally:
        fake_hub.delay_s = 0.0
    try:
        assert [token_ids(r) for r in results] == [expected] * 4
        assert fake_hub.downloads["testorg/auto-lora"] == 2  # config + weights, once
        log = server.log_path.read_text()
        assert log.count("pulling testorg/auto-lora@main from the hub") == 1
        assert log.count("loaded adapter testorg--auto-lora") == 1  # one engine load
    finally:
        assert adapterctl(server, "delete", "testorg--auto-lora").returncode == 0


def test_pull_breaking_off_stores_nothing(server: ServerInfo, fake_hub: FakeHub,
                                          hub_adapter: Path) -> None:
    fake_hub.add("testorg/flaky-lora", hub_adapter)
    fake_hub.truncate.add(("testorg/flaky-lora", "adapter_model.safetensors"))
    assert server.store is not None
    before = {p.name for p in (server.store / "versions").iterdir()}
    out = adapterctl(server, "pull", "testorg/flaky-lora")
    assert out.returncode == 1
    assert "hub_unavailable" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert {p.name for p in (server.store / "versions").iterdir()} == before
    assert not [p for p in (server.store / "tmp").iterdir() if p.name.startswith("stage-")]
    assert adapterctl(server, "show", "testorg--flaky-lora").returncode == 1
    refused = adapterctl(server, "pull", "elsewhere/some-lora")
    assert refused.returncode == 1 and "hub_repo_not_allowed" in refused.stderr
