"""Watched sources on real servers: two ``hotswap serve`` replicas (real engines) share one
store folder and both watch one S3 prefix (SeaweedFS) and one local directory, as pods of
the multi-replica overlay would watch a bucket.

- an adapter put into the bucket is served by both within one interval, with PEFT's
  tokens and the same version digest on both; overwritten, both serve the new version;
  deleted, both answer 404;
- the same for a directory;
- a broken adapter beside good ones is listed with its reason by both, the good ones
  serve.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import aws_env
from support import clients
from support.peft_ref import make_lora_adapter, peft_greedy
from support.s3 import S3Server
from support.server import ServerInfo, running_server, running_servers

pytestmark = pytest.mark.engine

BUCKET = "live"
INTERVAL_S = 1.0
#: A put is registered within one interval; the rest is one listing, fetch and admission.
REGISTER_WITHIN_S = INTERVAL_S * 1.1 + 5
PROMPT = "My favourite recipe starts with"
MAX_TOKENS = 10
KEY = "watch-admin-key"


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"w-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def watched_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("watched")


@pytest.fixture(scope="module")
def replicas(base_model_dir: Path, s3_server: S3Server, prefix: str, watched_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerInfo]]:
    s3_server.create_bucket(BUCKET)
    root = tmp_path_factory.mktemp("watch-replicas")
    args = ["--model", str(base_model_dir), "--served-model-name", "smollm2",
            "--dtype", "float32", "--max-model-len", "512", "--max-loras", "2",
            "--memory-fraction", "0.01", "--watch", f"s3://{BUCKET}/{prefix}",
            "--watch", str(watched_dir), "--watch-interval", str(INTERVAL_S)]
    contexts = [running_server(args, root / f"r{i}.log", "smollm2", {}, store=root / "store",
                               api_key=KEY) for i in range(2)]
    with pytest.MonkeyPatch.context() as env:
        aws_env(env, s3_server)  # the servers' environment only
        servers = running_servers(contexts)
        started = servers.__enter__()
    try:
        yield started
    finally:
        servers.__exit__(None, None, None)


@pytest.fixture(scope="module")
def loras(base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("watch-loras")
    return {name: make_lora_adapter(base_model_dir, root / name, rank=8, seed=seed,
                                    target_modules=["q_proj", "k_proj", "up_proj"])
            for name, seed in (("first", 5), ("second", 6))}


@pytest.fixture(scope="module")
def expected(base_model_dir: Path, loras: dict[str, Path], prompt_ids: list[int]
             ) -> dict[str, list[int]]:
    out = {name: peft_greedy(base_model_dir, path, [prompt_ids], MAX_TOKENS)[0]
           for name, path in loras.items()}
    out["base"] = peft_greedy(base_model_dir, None, [prompt_ids], MAX_TOKENS)[0]
    return out


@pytest.fixture(scope="module")
def prompt_ids(base_model_dir: Path) -> list[int]:
    return clients.tokenize(base_model_dir, PROMPT)


def adapter(server: ServerInfo, name: str) -> dict[str, Any] | None:
    resp = httpx.get(f"{server.url}/v1/adapters/{name}", headers=server.headers, timeout=30)
    if resp.status_code == 404:
        return None
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def digest_of(server: ServerInfo, name: str) -> str | None:
    found = adapter(server, name)
    return None if found is None or found["latest"] is None else found["latest"]["digest"]


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> float:
    """Seconds it took ``check`` to hold (fails after ``seconds``)."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, f"{what}: not within {seconds} s"
        time.sleep(0.1)
    return time.monotonic() - start


def ids(server: ServerInfo, model: str, prompt: list[int]) -> list[int]:
    return clients.greedy_ids(server.url, model, prompt, MAX_TOKENS, api_key=KEY)


def test_s3_adapter_appears_changes_and_goes_on_both_replicas(
        replicas: list[ServerInfo], s3_server: S3Server, prefix: str,
        loras: dict[str, Path], expected: dict[str, list[int]], prompt_ids: list[int]
        ) -> None:
    assert expected["first"] != expected["second"] != expected["base"]
    s3_server.put_dir(BUCKET, f"{prefix}/baker", loras["first"])
    took = wait_for(lambda: all(digest_of(r, "baker") for r in replicas),
                    REGISTER_WITHIN_S, "registered on both")
    assert took < REGISTER_WITHIN_S
    first = {digest_of(r, "baker") for r in replicas}
    assert len(first) == 1  # one version, whichever replica registered it
    for r in replicas:
        assert ids(r, "baker", prompt_ids) == expected["first"]
        models = httpx.get(f"{r.url}/v1/models", headers=r.headers, timeout=30).json()
        assert "baker" in {m["id"] for m in models["data"]}  # a model like any other
        listed = adapter(r, "baker")
        assert listed is not None and listed["loaded"]  # resident after serving

    s3_server.put_dir(BUCKET, f"{prefix}/baker", loras["second"])  # overwritten
    wait_for(lambda: all(digest_of(r, "baker") not in first for r in replicas),
             REGISTER_WITHIN_S, "new version on both")
    assert len({digest_of(r, "baker") for r in replicas}) == 1
    for r in replicas:
        assert ids(r, "baker", prompt_ids) == expected["second"]

    s3_server.delete_prefix(BUCKET, f"{prefix}/baker")
    wait_for(lambda: all(adapter(r, "baker") is None for r in replicas), REGISTER_WITHIN_S,
             "gone from both")
    for r in replicas:
        resp = httpx.post(f"{r.url}/v1/completions", headers=r.headers, timeout=60, json={
            "model": "baker", "prompt": "x", "max_tokens": 1})
        assert resp.status_code == 404, resp.text


def test_directory_adapter_appears_changes_and_goes(
        replicas: list[ServerInfo], watched_dir: Path, loras: dict[str, Path],
        expected: dict[str, list[int]], prompt_ids: list[int]) -> None:
    target = watched_dir / "pastry"
    # Written beside, then renamed in: the watcher never sees half an adapter.
    shutil.copytree(loras["first"], watched_dir / ".pastry.tmp")
    (watched_dir / ".pastry.tmp").rename(target)
    wait_for(lambda: all(digest_of(r, "pastry") for r in replicas), REGISTER_WITHIN_S,
             "registered on both")
    first = digest_of(replicas[0], "pastry")
    assert digest_of(replicas[1], "pastry") == first
    assert ids(replicas[1], "pastry", prompt_ids) == expected["first"]

    shutil.copytree(loras["second"], watched_dir / ".pastry.new")
    (watched_dir / ".pastry.new").rename(watched_dir / "pastry-v2-incoming")
    shutil.rmtree(target)
    (watched_dir / "pastry-v2-incoming").rename(target)
    wait_for(lambda: all(digest_of(r, "pastry") not in (None, first) for r in replicas),
             REGISTER_WITHIN_S * 2, "new version on both")
    assert ids(replicas[0], "pastry", prompt_ids) == expected["second"]

    shutil.rmtree(target)
    wait_for(lambda: all(adapter(r, "pastry") is None for r in replicas), REGISTER_WITHIN_S,
             "gone from both")


def test_a_broken_adapter_is_listed_beside_good_ones(
        replicas: list[ServerInfo], s3_server: S3Server, prefix: str,
        loras: dict[str, Path], expected: dict[str, list[int]], prompt_ids: list[int]
        ) -> None:
    s3_server.put_dir(BUCKET, f"{prefix}/good-one", loras["first"])
    s3_server.put_dir(BUCKET, f"{prefix}/good-two/canary", loras["second"])
    s3_server.put_dir(BUCKET, f"{prefix}/broken", loras["first"],
                      only=["adapter_config.json"])
    s3_server.put_bytes(BUCKET, f"{prefix}/broken/adapter_model.safetensors",
                        b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")

    def refused(server: ServerInfo) -> dict[str, dict[str, Any]]:
        body = httpx.get(f"{server.url}/v1/adapters", headers=server.headers,
                         timeout=30).json()
        return {r["name"]: r for r in body["refused"]}

    wait_for(lambda: all("broken" in refused(r) and digest_of(r, "good-one")
                         and adapter(r, "good-two") for r in replicas),
             REGISTER_WITHIN_S * 2, "good ones served, broken one listed")
    for r in replicas:
        reason = refused(r)["broken"]
        assert reason["code"] in ("corrupt_weights", "malformed_weights"), reason
        assert reason["source"] == f"s3://{BUCKET}/{prefix}"
    assert ids(replicas[0], "good-one", prompt_ids) == expected["first"]
    assert ids(replicas[1], "good-two:canary", prompt_ids) == expected["second"]
    for name in ("good-one", "good-two", "broken"):
        s3_server.delete_prefix(BUCKET, f"{prefix}/{name}")
    wait_for(lambda: all(not refused(r) and adapter(r, "good-one") is None
                         for r in replicas), REGISTER_WITHIN_S, "all gone")
