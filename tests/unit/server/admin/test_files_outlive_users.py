"""A deleted adapter's files stay while this process may still read them (requests, engine
slots) and for the grace period after; then gc removes them, with no further call."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from hotswap.adapters import collector as collector_module
from hotswap.adapters.errors import AdapterNotFound
from hotswap.adapters.service import AdapterService
from hotswap.adapters.store import GC_GRACE_S
from hotswap.server.engine.fake import FakeEngine
from hotswap.server.serving.models import ServedModels
from hotswap.server.serving.table import ServingTable
from support.fakes import make_adapter_dir, service_options


async def serving(tmp_path: Path, grace_s: float
                  ) -> tuple[AdapterService, ServingTable, ServedModels]:
    """The service, table and models as server/app.py wires them."""
    service = await AdapterService.open(replace(service_options(tmp_path), gc_grace_s=grace_s))
    table = ServingTable(FakeEngine(), service.path)
    service.set_in_use(table.digests_in_use)
    return service, table, ServedModels("fake-base", service, table)


async def test_delete_while_in_use_keeps_the_files_until_released(tmp_path: Path) -> None:
    service, table, models = await serving(tmp_path, grace_s=0)
    manifest = await service.import_dir("a", make_adapter_dir(tmp_path, "src"))
    files = service.path(manifest)
    lease = await table.acquire(table.spec_for(manifest))  # a request is running on it
    assert table.digests_in_use() == {manifest.digest}
    await models.delete("a")
    with pytest.raises(AdapterNotFound):  # gone for new requests at once
        await service.resolve("a")
    assert (files / "adapter_model.safetensors").is_file()  # the request may still load it
    assert await service.gc() == []
    await lease.release()  # its last request ended: out of the engine, out of the table
    assert table.digests_in_use() == set()
    assert await service.gc() == [manifest.digest]
    assert not files.exists()


async def test_loaded_but_idle_counts_as_in_use(tmp_path: Path) -> None:
    service, table, _ = await serving(tmp_path, grace_s=0)
    manifest = await service.import_dir("a", make_adapter_dir(tmp_path, "src"))
    spec = table.spec_for(manifest)
    assert table.digests_in_use() == set()  # known, never loaded
    await table.load(spec)
    assert table.digests_in_use() == {manifest.digest}  # the engine may reload its files
    await table.unload(spec)
    assert table.digests_in_use() == set()


async def test_within_grace_files_stay_then_a_planned_gc_removes_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collector_module, "GC_RETRY_S", 0.05)
    service, _, models = await serving(tmp_path, grace_s=0.2)
    manifest = await service.import_dir("a", make_adapter_dir(tmp_path, "src"))
    files = service.path(manifest)
    await models.delete("a")
    assert files.is_dir()  # another replica may still serve it
    for _ in range(100):  # the delete planned a gc for when the grace period ends
        if not files.exists():
            break
        await asyncio.sleep(0.02)
    assert not files.exists()


async def test_default_grace_keeps_unused_files(tmp_path: Path) -> None:
    service, _, models = await serving(tmp_path, grace_s=GC_GRACE_S)
    manifest = await service.import_dir("a", make_adapter_dir(tmp_path, "src"))
    await models.delete("a")
    assert await service.gc() == []
    assert service.path(manifest).is_dir()
