"""S3 pulls on the real server: ``adapterctl pull s3://...`` from SeaweedFS (through the
session's proxy), outputs compared with PEFT token for token, and a download cut midway
leaving nothing behind."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from conftest import PULL_BUCKET
from hotswap.adapters.store import Store
from support import clients
from support.cut_proxy import CutProxy
from support.peft_ref import make_lora_adapter, peft_greedy
from support.s3 import S3Server
from support.server import ServerInfo

pytestmark = pytest.mark.engine

PROMPT = "My favourite recipe starts with"
MAX_TOKENS = 10


@pytest.fixture(scope="module")
def s3_adapter(base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lora_adapter(base_model_dir, tmp_path_factory.mktemp("s3") / "lora",
                             rank=8, target_modules=["q_proj", "k_proj", "up_proj"],
                             # Not seed 5: test_hub_pull_server's adapter has that shape,
                             # and the same bytes would reuse its manifest (hub source).
                             seed=6)


@pytest.fixture(scope="module")
def prompt_ids(base_model_dir: Path) -> list[int]:
    return clients.tokenize(base_model_dir, PROMPT)


def test_adapterctl_pull_from_s3_serves_like_peft(
        server: ServerInfo, s3_server: S3Server, s3_adapter: Path, prompt_ids: list[int],
        base_model_dir: Path) -> None:
    prefix = f"srv-{uuid.uuid4().hex[:8]}/river-lora"
    s3_server.put_dir(PULL_BUCKET, prefix, s3_adapter)
    out = clients.adapterctl(server.url, "pull", f"s3://{PULL_BUCKET}/{prefix}",
                             api_key=server.api_key)
    assert out.returncode == 0, out.stderr
    try:  # from here on the adapter exists: deleted whatever fails
        assert "stored river-lora:latest -> " in out.stdout
        assert f"s3://{PULL_BUCKET}/{prefix}@" in out.stdout, out.stdout
        expected = peft_greedy(base_model_dir, s3_adapter, [prompt_ids], MAX_TOKENS)[0]
        got = clients.greedy_ids(server.url, "river-lora", prompt_ids, MAX_TOKENS,
                                 api_key=server.api_key or "unused")
        assert got == expected
        assert got != clients.greedy_ids(server.url, server.base_name, prompt_ids,
                                         MAX_TOKENS, api_key=server.api_key or "unused")
        listed = httpx.get(f"{server.url}/v1/models/river-lora", headers=server.headers)
        assert listed.status_code == 200, listed.text
    finally:
        assert clients.adapterctl(server.url, "delete", "river-lora",
                                  api_key=server.api_key).returncode == 0


def test_a_cut_download_stores_nothing_on_the_server(
        server: ServerInfo, s3_server: S3Server, s3_proxy: CutProxy, s3_adapter: Path
        ) -> None:
    prefix = f"srv-{uuid.uuid4().hex[:8]}/cut-lora"
    s3_server.put_dir(PULL_BUCKET, prefix, s3_adapter)
    assert server.store is not None
    before = {p.name for p in (server.store / "versions").iterdir()}
    s3_proxy.cut_after = 256 << 10  # the weights are ~3 MB
    try:
        out = clients.adapterctl(server.url, "pull", f"s3://{PULL_BUCKET}/{prefix}",
                                 api_key=server.api_key)
    finally:
        s3_proxy.cut_after = None
    assert out.returncode != 0
    assert "s3_unavailable" in out.stderr + out.stdout
    assert httpx.get(f"{server.url}/v1/adapters/cut-lora",
                     headers=server.headers).status_code == 404
    assert {p.name for p in (server.store / "versions").iterdir()} <= before
    assert Store(server.store).verify() == []
    assert not [p for p in (server.store / "tmp").iterdir() if p.name.startswith("stage-")]
