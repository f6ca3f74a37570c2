"""Adapter residency (gpu / cpu / disk) in /v1/models, /v1/adapters and ``adapterctl list``,
on the fake engine: what is shown is the engine's answer, not what the server asked of it.

The fake holds every adapter it was given (or used) in a "slot" and never evicts; the
engine-side LRU moves are simulated by editing what the fake holds behind the server's
back. The real engine's LRU is covered by tests/integration/test_residency.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from hotswap.server.engine.fake import FakeEngine
from hotswap.server.engine.interface import Residency
from support.fakes import make_adapter_dir, tar_gz


async def cards(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    resp = await client.get("/v1/models")
    assert resp.status_code == 200, resp.text
    return {c["id"]: c for c in resp.json()["data"]}


async def residency(client: httpx.AsyncClient, name: str) -> Any:
    """The residency of ``name`` as all three views report it (they must agree)."""
    card = (await cards(client))[name]["residency"]
    listed = {a["name"]: a for a in (await client.get("/v1/adapters")).json()["data"]}[name]
    shown = (await client.get(f"/v1/adapters/{name}")).json()
    assert card == listed["residency"] == shown["residency"]
    assert listed["loaded"] is shown["loaded"] is (card in ("gpu", "cpu"))
    return card


def engine_id(fake_engine: FakeEngine, name: str) -> int:
    found: int = next(i for i, s in fake_engine.loaded.items() if s.name == name)
    return found


async def test_models_show_residency(client: httpx.AsyncClient) -> None:
    by_id = await cards(client)
    assert by_id["fake-base"]["residency"] is None  # the base model is always there
    # Start-up adapters are loaded at start, so a broken one fails the start.
    assert by_id["sql-writer"]["residency"] == "gpu"
    assert await residency(client, "extract") == "gpu"


async def test_unload_and_use(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/adapters/extract/unload")).status_code == 200
    assert await residency(client, "extract") == "disk"
    assert await residency(client, "sql-writer") == "gpu"
    resp = await client.post("/v1/chat/completions", json={
        "model": "extract", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
    assert resp.status_code == 200
    assert await residency(client, "extract") == "gpu"


async def test_new_upload_is_on_disk_until_used(client: httpx.AsyncClient,
                                                tmp_path: Path) -> None:
    resp = await client.post("/v1/adapters", params={"name": "fresh"},
                             content=tar_gz(make_adapter_dir(tmp_path / "src", "f", seed=5)),
                             headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code == 201, resp.text
    assert await residency(client, "fresh") == "disk"
    resp = await client.post("/v1/completions",
                             json={"model": "fresh", "prompt": "x", "max_tokens": 2})
    assert resp.status_code == 200
    assert await residency(client, "fresh") == "gpu"


async def test_engine_evictions_are_seen(client: httpx.AsyncClient, fake_engine: FakeEngine,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # The engine drops an adapter on its own (LRU): the server never asked for it.
    fake_engine.loaded.pop(engine_id(fake_engine, "extract"))
    assert await residency(client, "extract") == "disk"

    # The engine keeps one in host memory but out of its slots.
    sql = engine_id(fake_engine, "sql-writer")

    async def host_cached() -> Mapping[int, Residency]:
        return {sql: "cpu"}

    monkeypatch.setattr(fake_engine, "adapter_residency", host_cached)
    assert await residency(client, "sql-writer") == "cpu"


async def test_engine_that_can_not_tell(client: httpx.AsyncClient,
                                        fake_engine: FakeEngine) -> None:
    fake_engine.healthy = False  # its adapter_residency() now raises EngineError
    by_id = await cards(client)
    assert by_id["sql-writer"]["residency"] is None
    assert await residency(client, "extract") is None


async def test_tags_share_the_version_residency(client: httpx.AsyncClient) -> None:
    digest = (await client.get("/v1/adapters/extract")).json()["latest"]["digest"]
    resp = await client.put("/v1/adapters/extract/tags/stable", json={"digest": digest})
    assert resp.status_code == 200
    by_id = await cards(client)
    assert by_id["extract:stable"]["residency"] == by_id["extract"]["residency"] == "gpu"
