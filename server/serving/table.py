"""The serving table: one record per adapter version this process serves, each with an
explicit state, and the one object that moves records between states.

Engine ids are keyed by version *digest*, not by name: vLLM caches adapter weights by id,
so when a tag moves to new content the new content gets a new id and can never be served
from the old weights. The same content under two names shares one id, and a digest keeps
its id for the life of the process (deleted and stored again, it gets the same one).

States and what moves a record between them::

    (new digest) ──▶ STORED ──acquire/load──▶ LOADING ──ok──▶ RESIDENT
                       ▲  ▲                      │              │
                       │  └──────── unload ──────┼──────────────┘
                       │                         └──error──▶ FAILED ──acquire──▶ LOADING
                       └── resolved again ◀── RETIRING ◀── retire (requests running)
                                                  │
                             last request ends ───┴──▶ gone (unloaded, record dropped)

``RESIDENT`` means this process loaded it; the engine may still evict it by LRU on its
own (that is residency, asked of the engine: :mod:`.residency`). A request holds a
:class:`Lease` from :meth:`ServingTable.acquire` to its end, so retiring never pulls an
adapter from under a running request.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from ...adapters.manifest import Manifest
from ..engine.interface import (
    KIND_OF_PEFT_TYPE,
    AdapterLoadError,
    AdapterSpec,
    Engine,
    EngineError,
)
from ..metrics.adapters import record_load, record_load_failure, record_unload
from .residency import Residencies

log = logging.getLogger(__name__)


class AdapterState(enum.StrEnum):
    STORED = "stored"  # has an engine id; not loaded by this process
    LOADING = "loading"  # an engine load is under way (shared by all who wait)
    RESIDENT = "resident"  # loaded by this process
    RETIRING = "retiring"  # deleted from the store; unloaded when its last request ends
    FAILED = "failed"  # the last load failed (``error`` says why); the next use retries


@dataclass
class AdapterRecord:
    spec: AdapterSpec
    digest: str
    state: AdapterState = AdapterState.STORED
    #: Requests holding a lease on this record now.
    in_flight: int = 0
    #: Why the last load failed (state FAILED).
    error: str | None = None
    loading: asyncio.Task[None] | None = None


class Lease:
    """A request's hold on an adapter; :meth:`release` exactly once when it ends."""

    def __init__(self, table: ServingTable | None, record: AdapterRecord | None) -> None:
        self._table = table
        self._record = record

    async def release(self) -> None:
        table, record = self._table, self._record
        self._table = self._record = None
        if table is not None and record is not None:
            await table._release(record)


#: The lease of a base-model request: nothing to hold.
NO_LEASE = Lease(None, None)


class ServingTable:
    """Records by engine id; ``path_of`` gives a stored version's immutable dir."""

    def __init__(self, engine: Engine, path_of: Callable[[Manifest], Path],
                 on_dropped: Callable[[], Awaitable[None]] | None = None) -> None:
        """``on_dropped`` runs after a retired version left the engine (the adapter
        service's file collection, so a deleted adapter's files go when its last request
        ends)."""
        self._engine = engine
        self._path_of = path_of
        self._on_dropped = on_dropped
        self._ids: dict[str, int] = {}  # digest -> engine id, for the process lifetime
        self._counter = itertools.count(1)  # vLLM requires ids >= 1
        self._records: dict[int, AdapterRecord] = {}
        #: The first spec of every id ever seen (a dropped record comes back from it).
        self._specs: dict[int, tuple[AdapterSpec, str]] = {}

    # --- records -------------------------------------------------------------------------

    def spec_for(self, manifest: Manifest) -> AdapterSpec:
        """The engine-facing spec of ``manifest``'s version under its name (a record is
        created on first sight; a retiring one is live again)."""
        digest, name = manifest.digest, manifest.name
        engine_id = self._ids.get(digest)
        if engine_id is None:
            engine_id = self._ids[digest] = next(self._counter)
            spec = AdapterSpec(name=name, engine_id=engine_id, path=self._path_of(manifest),
                               kind=KIND_OF_PEFT_TYPE[manifest.peft_type],
                               num_virtual_tokens=manifest.num_virtual_tokens or 0)
            self._specs[engine_id] = (spec, digest)
        record = self._record_of(engine_id)
        if record.state is AdapterState.RETIRING:
            # Stored again: keep it. STORED, not RESIDENT: an unload may have happened
            # while it was retiring, and a (cheap, idempotent) load is always correct.
            record.state = AdapterState.STORED
        # Listings ask for every adapter every time: the same object while the name holds.
        return record.spec if record.spec.name == name else dataclasses.replace(
            record.spec, name=name)

    def state(self, digest: str) -> AdapterState | None:
        engine_id = self._ids.get(digest)
        record = None if engine_id is None else self._records.get(engine_id)
        return None if record is None else record.state

    def digests_in_use(self) -> set[str]:
        """Versions whose files this process may still read: requests hold them, or the
        engine has (or is getting) them loaded and may reload them from disk (vLLM does
        when it evicted an adapter from its host cache and it is used again)."""
        engine_held = (AdapterState.LOADING, AdapterState.RESIDENT, AdapterState.RETIRING)
        return {r.digest for r in self._records.values()
                if r.in_flight or r.state in engine_held}

    def known_specs(self) -> list[AdapterSpec]:
        """The first spec of every engine id this process has given (dropped ones too)."""
        return [spec for spec, _ in self._specs.values()]

    def engine_id_of(self, digest: str) -> int | None:
        """A version's engine id, without creating a record (None: never given one)."""
        return self._ids.get(digest)

    def ids_in_flight(self) -> set[int]:
        """Engine ids requests hold now."""
        return {r.spec.engine_id for r in self._records.values() if r.in_flight}

    def names_in_use(self) -> set[str]:
        """Adapter names of live records (requests may still run on them)."""
        return {r.spec.name for r in self._records.values()}

    @property
    def requests_in_flight(self) -> int:
        """Adapter requests running now (base-model requests are not counted)."""
        return sum(r.in_flight for r in self._records.values())

    async def residency(self) -> Residencies:
        """Ask the engine once where every adapter is (one cheap call for a whole
        listing). An engine that can not tell gives unknown, not an error: listings
        still answer."""
        try:
            by_engine_id = await self._engine.adapter_residency()
        except EngineError as exc:
            log.warning("adapter residency unknown: %s", exc)
            by_engine_id = None
        return Residencies(by_engine_id, dict(self._ids))

    # --- transitions ---------------------------------------------------------------------

    async def acquire(self, spec: AdapterSpec | None) -> Lease:
        """Hold ``spec`` for one request, loading it first unless this process has it
        loaded (so files deleted later can no longer fail the request, and a broken
        adapter fails here, before any output)."""
        if spec is None:
            return NO_LEASE
        record = self._record(spec)
        record.in_flight += 1
        lease = Lease(self, record)
        try:
            if record.state in (AdapterState.STORED, AdapterState.FAILED,
                                AdapterState.LOADING):
                await self._load_once(record, spec)
        except BaseException:
            await lease.release()
            raise
        return lease

    async def load(self, spec: AdapterSpec) -> None:
        """Load now (warm), so the first request pays no load."""
        await self._load_once(self._record(spec), spec)

    async def unload(self, spec: AdapterSpec) -> None:
        """Drop from engine memory; it stays stored and reloads on its next request."""
        record = self._record(spec)
        await self._engine.remove_adapter(record.spec)
        if record.state is AdapterState.RESIDENT:
            record_unload(spec, "unload")  # not for what was never loaded
        if record.state is not AdapterState.RETIRING:
            record.state = AdapterState.STORED
        log.info("unloaded adapter %s (id %d)", spec.name, spec.engine_id)

    async def retire(self, digests: set[str]) -> None:
        """These versions left the store: drop each from the engine now, or, while
        requests still run on it, when the last of them ends."""
        for digest in digests:
            engine_id = self._ids.get(digest)
            record = None if engine_id is None else self._records.get(engine_id)
            if record is None:
                continue
            if record.in_flight or record.state is AdapterState.LOADING:
                record.state = AdapterState.RETIRING
            else:
                await self._drop(record)

    # --- internals -----------------------------------------------------------------------

    def _record(self, spec: AdapterSpec) -> AdapterRecord:
        return self._record_of(spec.engine_id)

    def _record_of(self, engine_id: int) -> AdapterRecord:
        """The live record of ``engine_id``; a dropped one comes back as STORED (a request
        that resolved the version just before it was retired still gets served)."""
        record = self._records.get(engine_id)
        if record is None:
            spec, digest = self._specs[engine_id]
            record = self._records[engine_id] = AdapterRecord(spec, digest)
        return record

    async def _load_once(self, record: AdapterRecord, spec: AdapterSpec) -> None:
        """One engine load however many requests wait for it (N first requests for a
        cold adapter: one load). ``spec`` carries the name it was asked for (the same
        content may be stored under several names; the engine id is the same)."""
        if record.loading is None:
            if record.state is not AdapterState.RETIRING:
                record.state = AdapterState.LOADING
            record.loading = asyncio.ensure_future(self._load(record, spec))
        # shield: one waiter going away must not cancel the load for the others.
        await asyncio.shield(record.loading)

    async def _load(self, record: AdapterRecord, spec: AdapterSpec) -> None:
        started = time.perf_counter()
        try:
            await self._engine.add_adapter(spec)
        except Exception as exc:
            record_load_failure(spec, "rejected" if isinstance(exc, AdapterLoadError)
                                else "engine" if isinstance(exc, EngineError) else "internal")
            if record.state is AdapterState.LOADING:
                record.state, record.error = AdapterState.FAILED, str(exc)
            log.warning("loading adapter %s (id %d) failed: %s", spec.name, spec.engine_id,
                        exc)
            if isinstance(exc, AdapterLoadError):
                # The engine's reason names the version's dir: clients see the name.
                raise AdapterLoadError(str(exc).replace(str(spec.path), f"<{spec.name}>")
                                       ) from None
            raise
        else:
            if record.state is AdapterState.LOADING:
                record.state, record.error = AdapterState.RESIDENT, None
            record_load(spec, time.perf_counter() - started)
            log.info("loaded adapter %s (id %d)", spec.name, spec.engine_id)
        finally:
            record.loading = None
            if record.state is AdapterState.RETIRING and not record.in_flight:
                with contextlib.suppress(EngineError):
                    await self._drop(record)

    async def _release(self, record: AdapterRecord) -> None:
        record.in_flight -= 1
        if (not record.in_flight and record.state is AdapterState.RETIRING
                and record.loading is None):
            await self._drop(record)
            if self._on_dropped is not None:
                await self._on_dropped()

    async def _drop(self, record: AdapterRecord) -> None:
        """Retired and idle: out of the engine, out of the table (the digest keeps its id)."""
        if self._records.get(record.spec.engine_id) is record:
            del self._records[record.spec.engine_id]
        if record.state in (AdapterState.RESIDENT, AdapterState.RETIRING):
            await self._engine.remove_adapter(record.spec)
            record_unload(record.spec, "retired")
            log.info("unloaded adapter %s (id %d)", record.spec.name, record.spec.engine_id)
