"""Which names the endpoint serves: the base model and every adapter in the store.

Resolving ``model``: the base name means no adapter; ``name`` or ``name:tag`` is looked up
in the store (one small ref-file read, so an upload or re-tag by another server sharing
the store is seen at once); anything else is a 404.

Engine ids are keyed by version *digest*, not by name: vLLM caches adapter weights by
id, so when a tag moves to new content the new content gets a new id and can never be
served from the old weights. The same content under two names shares one id.

Residency (gpu / cpu / disk) is the engine's word, asked when listing: vLLM moves
adapters in and out of its slots and host cache by LRU on its own, so what this process
asked it to load says little.

Deleting an adapter: the store forgets it at once (new requests 404), while requests
already running on it finish; it leaves the engine when the last of them ends.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from ..adapters.errors import AdapterNotFound, InvalidHubRepo, InvalidName
from ..adapters.manifest import Manifest
from .engine.interface import AdapterSpec, Engine, EngineError, Residency
from .errors import ModelNotFound
from .registry import Registry

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class CatalogEntry:
    """One servable ``model`` id: an adapter name, or ``name:tag`` for other tags."""

    model_id: str
    spec: AdapterSpec
    manifest: Manifest


@dataclass(frozen=True)
class Residencies:
    """Where each adapter version is, as the engine said at one moment."""

    #: engine id -> "gpu" | "cpu" (absent = "disk"); None if the engine could not tell.
    by_engine_id: Mapping[int, Residency] | None
    #: digest -> engine id, for the versions this process has given an id.
    engine_ids: Mapping[str, int]

    def of(self, digest: str) -> Residency | None:
        """The residency of a stored version; None when unknown."""
        if self.by_engine_id is None:
            return None
        engine_id = self.engine_ids.get(digest)
        if engine_id is None:
            return "disk"  # never given an id, so never loaded by this process
        return self.by_engine_id.get(engine_id, "disk")


class Catalog:
    def __init__(self, base_name: str, registry: Registry, engine: Engine) -> None:
        self.base_name = base_name
        self.registry = registry
        self.created = int(time.time())
        self._engine = engine
        self._ids: dict[str, int] = {}  # digest -> engine id
        self._counter = itertools.count(1)  # vLLM requires ids >= 1
        self._specs: dict[int, AdapterSpec] = {}
        self._warm: set[int] = set()  # added to the engine by this process
        self._inflight: collections.Counter[int] = collections.Counter()
        self._retiring: set[int] = set()  # deleted; leave the engine once idle
        self._loading: dict[int, asyncio.Task[None]] = {}  # first loads under way

    # --- resolving -----------------------------------------------------------------------

    async def resolve(self, model: str) -> AdapterSpec | None:
        """``None`` for the base model; raises ModelNotFound for unknown names."""
        if model == self.base_name:
            return None
        try:
            manifest = await self.registry.resolve(model)
        except (AdapterNotFound, InvalidName, InvalidHubRepo):
            # Not a name this server has or could fetch: OpenAI's answer is model_not_found.
            raise ModelNotFound(model) from None
        return self.spec_for(manifest)

    def spec_for(self, manifest: Manifest) -> AdapterSpec:
        engine_id = self._ids.get(manifest.digest)
        if engine_id is None:
            engine_id = self._ids[manifest.digest] = next(self._counter)
        # A digest deleted and stored again is live again: do not drop it when idle.
        self._retiring.discard(engine_id)
        known = self._specs.get(engine_id)
        if known is not None and known.name == manifest.name:
            return known  # listings ask for every adapter every time: no new objects
        # The path depends on the digest only: reuse it (building it costs listings more).
        path = known.path if known is not None else self.registry.path(manifest)
        spec = AdapterSpec(name=manifest.name, engine_id=engine_id, path=path)
        self._specs.setdefault(engine_id, spec)
        return spec

    @property
    def requests_in_flight(self) -> int:
        """Adapter requests running now (base-model requests are not counted)."""
        return sum(self._inflight.values())

    async def residency(self) -> Residencies:
        """Ask the engine once where every adapter is (one cheap call for a whole
        listing). An engine that can not tell gives unknown, not an error: listings
        still answer."""
        try:
            by_engine_id = await self._engine.adapter_residency()
        except EngineError as exc:
            log.warning("adapter residency unknown: %s", exc)
            by_engine_id = None
        return Residencies(by_engine_id, self._ids)

    async def entries(self) -> list[CatalogEntry]:
        """Every servable adapter id: ``name`` for the latest tag, ``name:tag`` for others."""
        out = []
        for entry, versions in await self.registry.list_versions():
            for tag, manifest in sorted(versions.items()):
                model_id = entry.name if tag == "latest" else f"{entry.name}:{tag}"
                named = (manifest if manifest.name == entry.name
                         else manifest.model_copy(update={"name": entry.name}))
                out.append(CatalogEntry(model_id, self.spec_for(named), named))
        return out

    # --- engine residency ----------------------------------------------------------------

    async def load(self, spec: AdapterSpec) -> None:
        """Add to the engine now (warm), so the first request pays no load and a broken
        adapter fails here with a clear error instead of inside a generation."""
        await self._engine.add_adapter(spec)
        self._warm.add(spec.engine_id)
        log.info("loaded adapter %s (id %d)", spec.name, spec.engine_id)

    async def _load_once(self, spec: AdapterSpec) -> None:
        """:meth:`load`, shared by the requests that arrive together for a cold adapter
        (N first requests: one engine load)."""
        engine_id = spec.engine_id
        task = self._loading.get(engine_id)
        if task is None:
            task = self._loading[engine_id] = asyncio.ensure_future(self.load(spec))

            def done(t: asyncio.Task[None]) -> None:
                self._loading.pop(engine_id, None)
                if not t.cancelled():
                    t.exception()  # retrieved: the waiters may all have gone

            task.add_done_callback(done)
        await asyncio.shield(task)

    async def unload(self, spec: AdapterSpec) -> None:
        """Drop from engine memory; it stays stored and reloads on its next request."""
        await self._engine.remove_adapter(spec)
        self._warm.discard(spec.engine_id)
        log.info("unloaded adapter %s (id %d)", spec.name, spec.engine_id)

    async def track(self, spec: AdapterSpec | None, outputs: AsyncGenerator[T, None]
                    ) -> AsyncIterator[T]:
        """Pass ``outputs`` through while counting the request as in flight on ``spec``.
        Closing this closes ``outputs`` at once (a client gone: the engine aborts now,
        not when the garbage collector finds the generator)."""
        async with contextlib.aclosing(outputs):
            if spec is None:
                async for item in outputs:
                    yield item
                return
            engine_id = spec.engine_id
            self._inflight[engine_id] += 1
            try:
                if engine_id not in self._warm:
                    # Loaded before generating: files deleted later can no longer fail it.
                    await self._load_once(spec)
                async for item in outputs:
                    yield item
            finally:
                self._inflight[engine_id] -= 1
                if not self._inflight[engine_id]:
                    del self._inflight[engine_id]
                    if engine_id in self._retiring:
                        await self._evict(engine_id)

    # --- deleting ------------------------------------------------------------------------

    async def delete(self, ref: str) -> None:
        """Delete ``name`` or ``name:tag`` from the store, and from the engine the versions
        nothing else points at (now, or when their last running request ends)."""
        digests = await self.registry.delete(ref)
        still_used = await self.registry.referenced()
        for digest in digests - still_used:
            engine_id = self._ids.get(digest)
            if engine_id is None:
                continue
            if self._inflight[engine_id]:
                # Even if unloaded meanwhile: the engine reloads on demand while it runs.
                self._retiring.add(engine_id)
            elif engine_id in self._warm:
                await self._evict(engine_id)

    async def _evict(self, engine_id: int) -> None:
        self._retiring.discard(engine_id)
        spec = self._specs.get(engine_id)
        if spec is not None:
            await self.unload(spec)
