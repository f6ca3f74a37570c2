"""Which names the endpoint serves: the base model and the registered adapters.

Resolving ``model`` happens here: the base name means no adapter, an adapter
name means that adapter, anything else is a 404. Each adapter gets an integer
engine id once and keeps it for the life of the process (vLLM keys its adapter
caches by that id; reusing an id for other weights would serve stale weights).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from .engine.base import AdapterSpec, Engine
from .errors import InvalidRequest, ModelNotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogEntry:
    spec: AdapterSpec
    created: int


class Catalog:
    def __init__(self, base_name: str) -> None:
        self.base_name = base_name
        self.created = int(time.time())
        self._adapters: dict[str, CatalogEntry] = {}
        self._ids = itertools.count(1)  # vLLM requires ids >= 1
        self._lock = asyncio.Lock()

    def resolve(self, model: str) -> AdapterSpec | None:
        """``None`` for the base model; raises ModelNotFound for unknown names."""
        if model == self.base_name:
            return None
        entry = self._adapters.get(model)
        if entry is None:
            raise ModelNotFound(model)
        return entry.spec

    def adapters(self) -> list[CatalogEntry]:
        return sorted(self._adapters.values(), key=lambda e: e.spec.name)

    async def register(self, engine: Engine, name: str, path: Path) -> AdapterSpec:
        """Add an adapter and load it into the engine once, so a bad one fails here."""
        async with self._lock:
            if name == self.base_name or name in self._adapters:
                raise InvalidRequest(f"name {name!r} is already in use", param="name")
            spec = AdapterSpec(name=name, engine_id=next(self._ids), path=path)
            await engine.add_adapter(spec)
            self._adapters[name] = CatalogEntry(spec=spec, created=int(time.time()))
            log.info("registered adapter %s (id %d) from %s", name, spec.engine_id, path)
            return spec
