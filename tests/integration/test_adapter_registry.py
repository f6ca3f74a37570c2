"""The adapter registry on the real server: upload with adapterctl, serve, delete; vLLM's
load_lora_adapter from the import root; a second server process on the same store; tags,
load / unload, and a delete while a request on the adapter runs.

Served tokens of an uploaded adapter are compared with PEFT's, so "served" means served
with that adapter's weights, not merely answered.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from support import clients
from support.peft_ref import make_lora_adapter, peft_greedy
from support.server import ServerInfo, running_server

pytestmark = pytest.mark.engine

PROMPT = "The best thing about Paris is"
MAX_TOKENS = 10


def adapterctl(server: ServerInfo, *args: str) -> subprocess.CompletedProcess[str]:
    return clients.adapterctl(server.url, *args, api_key=server.api_key)


def greedy_ids(server: ServerInfo, model: str, ids: list[int]) -> list[int]:
    return clients.greedy_ids(server.url, model, ids, MAX_TOKENS,
                              api_key=server.api_key or "unused")


@pytest.fixture(scope="module")
def prompt_ids(base_model_dir: Path) -> list[int]:
    return clients.tokenize(base_model_dir, PROMPT)


@pytest.fixture(scope="module")
def new_adapter(base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An adapter the server has never seen, and its PEFT output differs from the base's."""
    return make_lora_adapter(
        base_model_dir,
        tmp_path_factory.mktemp("new") / "uploaded",
        rank=8,
        target_modules=["q_proj", "v_proj", "down_proj"],
        seed=3,
    )


@pytest.fixture(scope="module")
def second_server(
    server: ServerInfo, base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerInfo]:
    """Another replica on the session server's store (no --adapter of its own), which
    requires API keys."""
    args = [
        "--model",
        str(base_model_dir),
        "--served-model-name",
        "smollm2",
        "--dtype",
        "float32",
        "--max-model-len",
        "2048",
        "--max-loras",
        "2",
        "--api-key",
        USER_KEY,
        "--admin-key",
        ADMIN_KEY,
    ]
    log_path = tmp_path_factory.mktemp("server2") / "server.log"
    with running_server(args, log_path, "smollm2", {}, store=server.store) as info:
        yield info


def test_upload_serve_delete_with_adapterctl(
    server: ServerInfo, base_model_dir: Path, new_adapter: Path, prompt_ids: list[int]
) -> None:
    expected = peft_greedy(base_model_dir, new_adapter, [prompt_ids], MAX_TOKENS)[0]
    base = greedy_ids(server, server.base_name, prompt_ids)
    assert expected != base  # otherwise serving the base would pass

    up = adapterctl(server, "upload", str(new_adapter), "--name", "uploaded")
    assert up.returncode == 0, up.stderr
    assert "stored uploaded:latest -> " in up.stdout
    try:
        listing = json.loads(adapterctl(server, "list", "--json").stdout)
        entry = next(a for a in listing["data"] if a["name"] == "uploaded")
        assert entry["latest"]["rank"] == 8 and entry["latest"]["source"] == "upload"
        assert listing["base_model_bytes"] > 10 * listing["stored_bytes"] / len(listing["data"])

        assert greedy_ids(server, "uploaded", prompt_ids) == expected

        # Tags, and explicit load / unload, on the real engine.
        digest = up.stdout.split("-> ")[1].split()[0]
        tagged = adapterctl(server, "tag", "uploaded", "stable", "--version", digest)
        assert tagged.returncode == 0, tagged.stderr
        assert greedy_ids(server, "uploaded:stable", prompt_ids) == expected
        assert adapterctl(server, "unload", "uploaded").returncode == 0
        shown = json.loads(adapterctl(server, "show", "uploaded").stdout)
        assert shown["residency"] == "disk"
        assert adapterctl(server, "load", "uploaded").returncode == 0
        shown = json.loads(adapterctl(server, "show", "uploaded").stdout)
        assert shown["residency"] in ("gpu", "cpu")
        assert greedy_ids(server, "uploaded", prompt_ids) == expected
    finally:
        deleted = adapterctl(server, "delete", "uploaded")
    assert deleted.returncode == 0, deleted.stderr
    with pytest.raises(openai.NotFoundError):
        greedy_ids(server, "uploaded", prompt_ids)
    missing = adapterctl(server, "show", "uploaded")
    assert missing.returncode == 1 and "uploaded" in missing.stderr
    with pytest.raises(openai.NotFoundError):
        greedy_ids(server, "uploaded:stable", prompt_ids)


def test_refused_upload_says_why(server: ServerInfo, tmp_path: Path, new_adapter: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(new_adapter, bad)
    (bad / "training_args.bin").write_bytes(b"\x80\x04.")
    up = adapterctl(server, "upload", str(bad))
    assert up.returncode == 1
    assert "pickle" in up.stderr and len(up.stderr.strip().splitlines()) == 1
    assert adapterctl(server, "show", "bad").returncode == 1


def test_vllm_load_lora_adapter_from_import_root(
    server: ServerInfo, base_model_dir: Path, new_adapter: Path, prompt_ids: list[int]
) -> None:
    assert server.import_root is not None
    src = shutil.copytree(new_adapter, server.import_root / "imported")
    resp = httpx.post(
        f"{server.url}/v1/load_lora_adapter",
        headers=server.headers,
        json={"lora_name": "imported", "lora_path": str(src)},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    assert resp.text == "Success: LoRA adapter 'imported' added successfully."
    try:
        expected = peft_greedy(base_model_dir, new_adapter, [prompt_ids], MAX_TOKENS)[0]
        assert greedy_ids(server, "imported", prompt_ids) == expected
        outside = httpx.post(
            f"{server.url}/v1/load_lora_adapter",
            headers=server.headers,
            json={"lora_name": "x", "lora_path": str(new_adapter)},
        )
        assert outside.status_code == 403
        assert outside.json()["error"]["code"] == "path_not_allowed"
    finally:
        resp = httpx.post(
            f"{server.url}/v1/unload_lora_adapter",
            headers=server.headers,
            json={"lora_name": "imported"},
            timeout=60,
        )
    assert resp.status_code == 200, resp.text
    with pytest.raises(openai.NotFoundError):
        greedy_ids(server, "imported", prompt_ids)


USER_KEY, ADMIN_KEY = "sk-integration-user", "sk-integration-admin"


def test_second_server_on_same_store_sees_upload(
    server: ServerInfo, second_server: ServerInfo, new_adapter: Path, prompt_ids: list[int]
) -> None:
    # The replica was already running when the upload happened: no start-time snapshot.
    up = adapterctl(server, "upload", str(new_adapter), "--name", "shared")
    assert up.returncode == 0, up.stderr
    try:
        on_first = greedy_ids(server, "shared", prompt_ids)
        on_second = clients.greedy_ids(
            second_server.url, "shared", prompt_ids, MAX_TOKENS, api_key=USER_KEY
        )
        assert on_second == on_first
        assert on_second != clients.greedy_ids(
            second_server.url, second_server.base_name, prompt_ids, MAX_TOKENS, api_key=USER_KEY
        )
    finally:
        assert adapterctl(server, "delete", "shared").returncode == 0
    with pytest.raises(openai.NotFoundError):
        clients.greedy_ids(second_server.url, "shared", prompt_ids, MAX_TOKENS, api_key=USER_KEY)


def test_keys_and_scopes_on_a_real_server(
    second_server: ServerInfo, new_adapter: Path, prompt_ids: list[int]
) -> None:
    url = second_server.url
    with pytest.raises(openai.AuthenticationError):
        clients.greedy_ids(url, second_server.base_name, prompt_ids, MAX_TOKENS)
    base = clients.greedy_ids(
        url, second_server.base_name, prompt_ids, MAX_TOKENS, api_key=USER_KEY
    )
    assert base
    # adapterctl: the user key may list, not upload; the admin key may.
    listed = clients.adapterctl(url, "list", api_key=USER_KEY)
    assert listed.returncode == 0, listed.stderr
    refused = clients.adapterctl(
        url, "upload", str(new_adapter), "--name", "keyed", api_key=USER_KEY
    )
    assert refused.returncode != 0 and "admin scope" in refused.stderr, refused.stderr
    no_key = clients.adapterctl(url, "list")
    assert no_key.returncode != 0 and "API key" in no_key.stderr, no_key.stderr
    up = clients.adapterctl(url, "upload", str(new_adapter), "--name", "keyed", api_key=ADMIN_KEY)
    assert up.returncode == 0, up.stderr
    try:
        served = clients.greedy_ids(url, "keyed", prompt_ids, MAX_TOKENS, api_key=USER_KEY)
        assert served != base
    finally:
        gone = clients.adapterctl(url, "delete", "keyed", api_key=ADMIN_KEY)
        assert gone.returncode == 0, gone.stderr


def test_delete_lets_running_request_finish(
    server: ServerInfo, new_adapter: Path, prompt_ids: list[int]
) -> None:
    up = adapterctl(server, "upload", str(new_adapter), "--name", "doomed")
    assert up.returncode == 0, up.stderr
    body = {
        "model": "doomed",
        "prompt": prompt_ids,
        "max_tokens": 60,
        "temperature": 0,
        "ignore_eos": True,
    }
    deleted = False
    try:
        whole = httpx.post(
            f"{server.url}/v1/completions", headers=server.headers, json=body, timeout=300
        )
        assert whole.status_code == 200, whole.text
        expected: str = whole.json()["choices"][0]["text"]
        streamed, chunks = "", 0
        with httpx.stream(
            "POST",
            f"{server.url}/v1/completions",
            headers=server.headers,
            json={**body, "stream": True},
            timeout=300,
        ) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                streamed += json.loads(line[6:])["choices"][0]["text"]
                chunks += 1
                if not deleted:
                    # Deleted while it runs: the name is gone at once, the request goes on.
                    assert adapterctl(server, "delete", "doomed").returncode == 0
                    deleted = True
                    assert adapterctl(server, "show", "doomed").returncode == 1
    finally:
        if not deleted:
            adapterctl(server, "delete", "doomed")
    assert deleted and chunks > 10  # the delete came early in a long stream
    assert streamed == expected  # every token, computed with the adapter's weights
    with pytest.raises(openai.NotFoundError):
        greedy_ids(server, "doomed", prompt_ids)


def test_two_versions_of_one_name_share_a_batch(
        server: ServerInfo, prompt_ids: list[int]) -> None:
    """``twin`` (latest) and ``twin:stable`` are two versions in flight together; the
    stable one is also the session's ``lora-a`` under another name. vLLM told them apart
    by name only: the engine died (found by the soak)."""
    want_a = greedy_ids(server, "lora-a", prompt_ids)
    want_b = greedy_ids(server, "lora-b", prompt_ids)
    assert want_a != want_b
    first = adapterctl(server, "upload", str(server.adapters["lora-a"]), "--name", "twin")
    assert first.returncode == 0, first.stderr
    try:
        v1 = first.stdout.split("-> ")[1].split()[0]
        assert adapterctl(server, "tag", "twin", "stable", "--version", v1).returncode == 0
        second = adapterctl(server, "upload", str(server.adapters["lora-b"]), "--name", "twin")
        assert second.returncode == 0, second.stderr
        models = ["twin", "twin:stable", "lora-a", "twin"] * 3
        with ThreadPoolExecutor(len(models)) as pool:
            got = list(pool.map(lambda m: greedy_ids(server, m, prompt_ids), models))
        want = {"twin": want_b, "twin:stable": want_a, "lora-a": want_a}
        solo = {"lora-a": want_a, "lora-b": want_b,
                "base": greedy_ids(server, server.base_name, prompt_ids)}
        seen = [next((k for k, v in solo.items() if v == g), str(g)) for g in got]
        assert got == [want[m] for m in models], list(zip(models, seen, strict=True))
        assert httpx.get(f"{server.url}/health").status_code == 200
    finally:
        assert adapterctl(server, "delete", "twin").returncode == 0


def test_engine_refusing_stored_files_is_a_422_naming_the_adapter(
        server: ServerInfo, base_model_dir: Path, tmp_path: Path) -> None:
    """Admitted and stored, then its weights cut on disk: vLLM's engine core fails to
    read them in its own process and its client raises a bare ``Exception``. That is the
    adapter's fault, not the server's: 422 ``adapter_load_failed`` with the reason, no
    "unhandled error", no store path; the server serves on."""
    adapter = make_lora_adapter(base_model_dir, tmp_path / "cut", rank=4,
                                target_modules=["q_proj"], seed=11)
    up = adapterctl(server, "upload", str(adapter), "--name", "cut-weights")
    assert up.returncode == 0, up.stderr
    url, headers = server.url, server.headers
    try:
        models = httpx.get(f"{url}/v1/models", headers=headers).json()["data"]
        digest = next(m["digest"] for m in models if m["id"] == "cut-weights")
        assert server.store is not None
        weights = server.store / "versions" / digest / "adapter" / "adapter_model.safetensors"
        whole, mode = weights.read_bytes(), weights.stat().st_mode
        logged = server.log_path.stat().st_size
        weights.chmod(0o644)
        weights.write_bytes(whole[:64])
        try:
            resp = httpx.post(f"{url}/v1/adapters/cut-weights/load", headers=headers,
                              timeout=120)
        finally:
            weights.write_bytes(whole)
            weights.chmod(mode)
        assert resp.status_code == 422, resp.text
        error = resp.json()["error"]
        assert error["code"] == "adapter_load_failed"
        assert "cut-weights" in error["message"]
        assert str(server.store) not in error["message"]
        assert "Call to add_lora" not in error["message"]
        with server.log_path.open() as log:
            log.seek(logged)
            assert "unhandled error" not in log.read()
        # The engine refused one load only: the same version loads once its file is back.
        again = httpx.post(f"{url}/v1/adapters/cut-weights/load", headers=headers,
                           timeout=120)
        assert again.status_code == 200, again.text
        ok = httpx.post(f"{url}/v1/completions", headers=headers, timeout=120,
                        json={"model": "cut-weights", "prompt": "Hi", "max_tokens": 2})
        assert ok.status_code == 200, ok.text
    finally:
        assert adapterctl(server, "delete", "cut-weights").returncode == 0
