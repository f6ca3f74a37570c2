"""Adapter residency on the real engine: /v1/models and /v1/adapters report where vLLM
holds each adapter (gpu slot / cpu host cache / disk), including moves vLLM makes on its
own by LRU, which the server never asked for.

The session server has as many host-cache places as slots (``--max-cpu-loras`` defaults
to ``--max-loras``), so there an adapter is in a slot or on disk, never "cpu". A second,
small server (one slot, two host-cache places, three adapters, its own store) shows
the whole LRU walk.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.peft_ref import make_lora_adapter
from support.server import ServerInfo, running_server

pytestmark = pytest.mark.engine


def residencies(server: ServerInfo) -> dict[str, Any]:
    """Adapter name -> residency, from /v1/models; /v1/adapters must agree."""
    cards = httpx.get(f"{server.url}/v1/models", headers=server.headers, timeout=30).json()["data"]
    by_model = {c["id"]: c["residency"] for c in cards if c["id"] != server.base_name}
    listed = httpx.get(f"{server.url}/v1/adapters", headers=server.headers, timeout=30).json()[
        "data"
    ]
    # (A name with only non-latest tags has no card under its bare name.)
    by_adapter = {a["name"]: a["residency"] for a in listed if a["name"] in by_model}
    assert by_adapter == {name: by_model[name] for name in by_adapter}
    assert all(a["loaded"] is (a["residency"] in ("gpu", "cpu")) for a in listed)
    return by_model


def use(server: ServerInfo, model: str) -> None:
    resp = httpx.post(
        f"{server.url}/v1/completions",
        headers=server.headers,
        timeout=120,
        json={"model": model, "prompt": "Hello", "max_tokens": 2},
    )
    assert resp.status_code == 200, resp.text


def test_used_adapter_is_in_a_slot_and_unload_sends_it_to_disk(server: ServerInfo) -> None:
    use(server, "lora-a")
    assert residencies(server)["lora-a"] == "gpu"
    base = httpx.get(f"{server.url}/v1/models", headers=server.headers, timeout=30).json()["data"][
        0
    ]
    assert base["id"] == server.base_name and base["residency"] is None

    resp = httpx.post(f"{server.url}/v1/adapters/lora-a/unload", headers=server.headers, timeout=60)
    assert resp.status_code == 200, resp.text
    try:
        assert residencies(server)["lora-a"] == "disk"
        shown = httpx.get(
            f"{server.url}/v1/adapters/lora-a", headers=server.headers, timeout=30
        ).json()
        assert shown["residency"] == "disk" and shown["loaded"] is False
    finally:
        # Other tests expect it loaded, as the server started.
        resp = httpx.post(
            f"{server.url}/v1/adapters/lora-a/load", headers=server.headers, timeout=60
        )
    assert resp.status_code == 200, resp.text
    assert residencies(server)["lora-a"] == "gpu"


@pytest.fixture(scope="module")
def small_server(
    base_model_dir: Path, lora_adapters: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerInfo]:
    """One slot, two host-cache places; lora-a, lora-b, lora-c loaded at start, in turn."""
    root = tmp_path_factory.mktemp("residency")
    adapters = {
        **lora_adapters,
        "lora-c": make_lora_adapter(
            base_model_dir, root / "lora-c", rank=4, target_modules=["q_proj", "v_proj"], seed=5
        ),
    }
    args = [
        "--model",
        str(base_model_dir),
        "--served-model-name",
        "smollm2",
        "--max-model-len",
        "1024",
        "--max-loras",
        "1",
        "--max-cpu-loras",
        "2",
    ]
    for name, path in adapters.items():
        args += ["--adapter", f"{name}={path}"]
    with running_server(
        args, root / "server.log", "smollm2", adapters, store=root / "store"
    ) as info:
        yield info


def test_lru_moves_adapters_between_slot_host_cache_and_disk(small_server: ServerInfo) -> None:
    # Start-up loaded a, b, c in turn; vLLM activates on load, so each took the only
    # slot, pushing the previous one to the host cache, and c pushed a (the least
    # recently used) out of the full cache. The server asked for all three to be loaded.
    assert residencies(small_server) == {"lora-a": "disk", "lora-b": "cpu", "lora-c": "gpu"}

    use(small_server, "lora-a")  # read back from disk into the slot: c to cache, b out
    assert residencies(small_server) == {"lora-a": "gpu", "lora-b": "disk", "lora-c": "cpu"}

    use(small_server, "lora-c")  # from the host cache into the slot: a to the cache
    assert residencies(small_server) == {"lora-a": "cpu", "lora-b": "disk", "lora-c": "gpu"}

    unloaded = httpx.post(
        f"{small_server.url}/v1/adapters/lora-c/unload", headers=small_server.headers, timeout=60
    )
    assert unloaded.status_code == 200, unloaded.text
    assert residencies(small_server) == {"lora-a": "cpu", "lora-b": "disk", "lora-c": "disk"}
