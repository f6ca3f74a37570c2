"""Store faults over HTTP: a full disk during an upload or a hub pull, and a hub download
cut mid-file, against the real app (fake engine) whose store is on a small real tmpfs.

Each fault answers an OpenAI error body: 507 ``insufficient_storage`` for a full disk
(the ``store_full`` family: the server, not the request, lacks room), 502
``hub_unavailable`` for a cut download (the upstream hub failed; as for every hub
transport failure). Afterwards the adapter stored before lists and serves, nothing of
the failed one is visible or left in ``tmp/``, and the same request succeeds once the
disk has room again (or the hub answers whole). The service-level cases, with the exact
step each fault hits, are tests/unit/adapters/test_store_faults.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from hotswap.adapters.store import Store
from hotswap.server.engine.fake import FakeEngine
from support import small_disk
from support.app import in_process, make_app
from support.fake_hub import FakeHub
from support.fakes import make_adapter_dir
from support.http import assert_openai_error
from support.small_disk import NAME, PAGE, REPO, fill, free

ARCHIVE = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk.mounted(tmp_path / "disk") as mnt:
        yield mnt


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[FakeHub]:
    with small_disk.big_hub(tmp_path / "hub-src", seed=31) as fake:
        yield fake


class Server:
    def __init__(self, client: httpx.AsyncClient, engine: FakeEngine, store: Path) -> None:
        self.client, self.engine, self.store = client, engine, store

    async def upload(self, name: str, data: bytes) -> httpx.Response:
        return await self.client.post("/v1/adapters", params={"name": name}, content=data,
                                      headers=ARCHIVE)

    async def pull(self, **body: object) -> httpx.Response:
        return await self.client.post("/v1/adapters/pull", json={"repo": REPO, **body})

    async def complete(self, model: str) -> httpx.Response:
        return await self.client.post("/v1/completions",
                                      json={"model": model, "prompt": "x", "max_tokens": 40})

    async def assert_only_other_serves(self) -> None:
        """``other`` lists and serves; nothing else is visible or left behind."""
        listing = (await self.client.get("/v1/adapters")).json()
        assert [a["name"] for a in listing["data"]] == ["other"]
        models = {m["id"] for m in (await self.client.get("/v1/models")).json()["data"]}
        assert models == {"fake-base", "other"}
        for name in ("big", NAME):
            assert_openai_error(await self.client.get(f"/v1/adapters/{name}"), 404,
                                "adapter_not_found")
        served = await self.complete("other")
        assert served.status_code == 200, served.text
        assert served.json()["choices"][0]["text"].startswith("other")
        assert "other" in {s.name for s in self.engine.loaded.values()}
        reader = Store(self.store)
        assert [e.name for e in reader.list()] == ["other"]
        assert reader.verify() == []
        assert os.listdir(self.store / "tmp") == []
        assert os.listdir(self.store / "hub") == []


@pytest.fixture
async def server(disk: Path, tmp_path: Path, hub: FakeHub) -> AsyncIterator[Server]:
    engine = FakeEngine()
    options = small_disk.options_on(disk, hub)
    other = make_adapter_dir(tmp_path / "src", "other", seed=32)
    app = make_app(disk, engine, options=options, adapters=[("other", other)])
    async with in_process(app) as client:
        yield Server(client, engine, disk / "store")


@pytest.fixture
def big(tmp_path: Path) -> bytes:
    return small_disk.big_archive(tmp_path / "src", seed=33)


@pytest.mark.parametrize("leave_pages", [0, 24])  # none; room for the archive, not its files
async def test_upload_to_a_full_disk_is_507_and_others_keep_serving(
        server: Server, disk: Path, big: bytes, leave_pages: int) -> None:
    fill(disk, leave=leave_pages * PAGE)
    resp = await server.upload("big", big)
    assert_openai_error(resp, 507, "insufficient_storage")
    error = resp.json()["error"]
    assert error["type"] == "server_error"
    assert "disk" in error["message"] and str(disk) not in error["message"]
    await server.assert_only_other_serves()

    free(disk)
    resp = await server.upload("big", big)
    assert resp.status_code == 201, resp.text
    served = await server.complete("big")
    assert served.status_code == 200 and served.json()["choices"][0]["text"].startswith("big")
    assert Store(server.store).verify() == []


async def test_pull_to_a_full_disk_is_507_streaming_or_not(server: Server,
                                                           disk: Path) -> None:
    fill(disk, leave=8 * PAGE)  # the config fits, the weights do not
    assert_openai_error(await server.pull(), 507, "insufficient_storage")
    await server.assert_only_other_serves()
    streamed = await server.pull(stream=True)
    last = json.loads(streamed.text.splitlines()[-1])
    assert last["status"] == "error" and last["error"]["code"] == "insufficient_storage"
    assert set(last["error"]) == {"message", "type", "param", "code"}
    await server.assert_only_other_serves()

    free(disk)
    resp = await server.pull()
    assert resp.status_code == 201, resp.text
    by_repo = await server.complete(REPO)
    assert by_repo.status_code == 200, by_repo.text
    assert Store(server.store).verify() == []


@pytest.fixture
def no_resume_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    small_disk.skip_resume_pauses(monkeypatch)


async def test_download_cut_mid_file_is_502_and_others_keep_serving(
        server: Server, hub: FakeHub, no_resume_pause: None) -> None:
    hub.truncate.add((REPO, "adapter_model.safetensors"))
    resp = await server.pull()
    assert_openai_error(resp, 502, "hub_unavailable")
    assert resp.json()["error"]["type"] == "server_error"
    await server.assert_only_other_serves()
    hub.truncate.clear()
    assert (await server.pull()).status_code == 201
    assert (await server.complete(NAME)).status_code == 200
