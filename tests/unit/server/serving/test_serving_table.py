"""The serving table's states and transitions, on the fake engine and a real store."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest
from hotswap.adapters.manifest import Manifest
from hotswap.adapters.service import AdapterService
from hotswap.server.engine.fake import FakeEngine
from hotswap.server.engine.interface import AdapterLoadError, AdapterSpec
from hotswap.server.serving.table import AdapterState, ServingTable
from support.fakes import make_adapter_dir, service_options


class CountingEngine(FakeEngine):
    """Counts engine loads; ``gate`` holds every load until set; ``fail`` makes it raise."""

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0
        self.removes = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def add_adapter(self, adapter: AdapterSpec) -> None:
        self.loads += 1
        await self.gate.wait()
        if self.fail:
            raise AdapterLoadError("refused by the test")
        await super().add_adapter(adapter)

    async def remove_adapter(self, adapter: AdapterSpec) -> None:
        self.removes += 1
        await super().remove_adapter(adapter)


@pytest.fixture
async def stored(tmp_path: Path) -> tuple[AdapterService, Manifest]:
    service = await AdapterService.open(service_options(tmp_path))
    manifest = await service.import_dir("a", make_adapter_dir(tmp_path, "src"))
    return service, manifest


@pytest.fixture
def engine() -> CountingEngine:
    return CountingEngine()


@dataclass
class Served:
    table: ServingTable
    spec: AdapterSpec
    manifest: Manifest
    service: AdapterService

    def state(self) -> AdapterState | None:
        return self.table.state(self.manifest.digest)


@pytest.fixture
def served(engine: CountingEngine, stored: tuple[AdapterService, Manifest]) -> Served:
    """The stored adapter's record in a new table (state STORED)."""
    service, manifest = stored
    table = ServingTable(engine, service.path)
    return Served(table, table.spec_for(manifest), manifest, service)


async def test_concurrent_first_requests_share_one_load(
    engine: CountingEngine, served: Served
) -> None:
    table, spec, manifest = served.table, served.spec, served.manifest
    assert table.state(manifest.digest) is AdapterState.STORED
    engine.gate.clear()
    acquiring = [asyncio.create_task(table.acquire(spec)) for _ in range(5)]
    await asyncio.sleep(0.01)
    assert table.state(manifest.digest) is AdapterState.LOADING
    engine.gate.set()
    leases = await asyncio.gather(*acquiring)
    assert engine.loads == 1
    assert table.state(manifest.digest) is AdapterState.RESIDENT
    assert table.requests_in_flight == 5
    for lease in leases:
        await lease.release()
        await lease.release()  # idempotent: a second release changes nothing
    assert table.requests_in_flight == 0
    # Resident: the next request loads nothing.
    await (await table.acquire(spec)).release()
    assert engine.loads == 1


async def test_failed_load_is_kept_with_its_reason_and_retried(
    engine: CountingEngine, served: Served
) -> None:
    table, spec, manifest = served.table, served.spec, served.manifest
    engine.fail = True
    with pytest.raises(AdapterLoadError):
        await table.acquire(spec)
    assert table.state(manifest.digest) is AdapterState.FAILED
    assert table.requests_in_flight == 0  # the failed request holds nothing
    engine.fail = False
    await (await table.acquire(spec)).release()
    assert table.state(manifest.digest) is AdapterState.RESIDENT
    assert engine.loads == 2


async def test_retire_waits_for_the_last_request(
    engine: CountingEngine, served: Served
) -> None:
    table, spec, manifest = served.table, served.spec, served.manifest
    first, second = await table.acquire(spec), await table.acquire(spec)
    await table.retire({manifest.digest})
    assert table.state(manifest.digest) is AdapterState.RETIRING
    await first.release()
    assert spec.engine_id in engine.loaded  # one request still runs on it
    await second.release()
    assert spec.engine_id not in engine.loaded
    assert table.state(manifest.digest) is None  # gone from the table


async def test_idle_retire_unloads_now_and_a_new_store_revives_same_id(
    engine: CountingEngine, served: Served
) -> None:
    table, spec, manifest = served.table, served.spec, served.manifest
    await table.load(spec)
    await table.retire({manifest.digest})
    assert spec.engine_id not in engine.loaded and table.state(manifest.digest) is None
    again = table.spec_for(manifest)  # the same content stored again
    assert again.engine_id == spec.engine_id
    assert table.state(manifest.digest) is AdapterState.STORED


async def test_stored_again_while_retiring_stays(
    engine: CountingEngine, served: Served
) -> None:
    table, spec, manifest = served.table, served.spec, served.manifest
    lease = await table.acquire(spec)
    await table.retire({manifest.digest})
    table.spec_for(manifest)  # resolved again: live
    await lease.release()
    assert table.state(manifest.digest) is AdapterState.STORED
    assert engine.removes == 0


async def test_unload_keeps_the_record(
    engine: CountingEngine, served: Served
) -> None:
    table, spec, manifest = served.table, served.spec, served.manifest
    await table.load(spec)
    await table.unload(spec)
    assert table.state(manifest.digest) is AdapterState.STORED
    assert spec.engine_id not in engine.loaded
    await (await table.acquire(spec)).release()  # reloads on its next request
    assert engine.loads == 2


async def test_new_content_under_a_name_gets_a_new_engine_id(
    engine: CountingEngine, served: Served, tmp_path: Path
) -> None:
    table, manifest = served.table, served.manifest
    newer = await served.service.import_dir("a", make_adapter_dir(tmp_path, "src2", seed=5))
    assert table.spec_for(newer).engine_id != table.spec_for(manifest).engine_id
    # The same content under another name shares the id (vLLM caches weights by id).
    alias = await served.service.import_dir("b", make_adapter_dir(tmp_path, "src3"))
    assert alias.digest == manifest.digest
    assert table.spec_for(alias).engine_id == table.spec_for(manifest).engine_id
    assert table.spec_for(alias).name == "b"
    # The engine loads it under the name the request asked for (vLLM's metrics label).
    await (await table.acquire(table.spec_for(alias))).release()
    assert engine.loaded[table.spec_for(alias).engine_id].name == "b"


async def test_load_errors_name_the_adapter_not_its_dir(
    engine: CountingEngine, served: Served
) -> None:
    (served.spec.path / "adapter_config.json").unlink()  # the fake engine then refuses it
    with pytest.raises(AdapterLoadError) as refused:
        await served.table.acquire(served.spec)
    assert str(served.spec.path) not in str(refused.value)
    assert "<a> has no adapter_config.json" in str(refused.value)
