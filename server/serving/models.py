"""Which ``model`` names this server answers to, and what each one serves.

Resolving ``model``: the base name means no adapter; ``name`` or ``name:tag`` is looked up
in the store (one small ref-file read, so an upload or re-tag by another server sharing
the store is seen at once); a hub repo id may be pulled (``--hub-autoload``); anything
else is a 404. What a name resolves to becomes a record of the serving table.

Deleting an adapter: the store forgets it at once (new requests 404), while requests
already running on it finish; it leaves the engine when the last of them ends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ...adapters.defaults import TaskDefaults
from ...adapters.errors import AdapterNotFound, InvalidHubRepo, InvalidName
from ...adapters.manifest import Manifest
from ...adapters.names import DEFAULT_TAG
from ...adapters.service import AdapterService
from ..auth import Principal
from ..engine.interface import AdapterSpec
from ..errors import ModelNotFound
from .table import ServingTable


@dataclass(frozen=True)
class ServedAdapter:
    """One servable ``model`` id: an adapter name, or ``name:tag`` for other tags."""

    model_id: str
    spec: AdapterSpec
    manifest: Manifest

    @property
    def defaults(self) -> TaskDefaults | None:
        """The version's task defaults (``hotswap.json``), as its manifest records them."""
        return self.manifest.defaults


class ServedModels:
    def __init__(self, base_name: str, service: AdapterService, table: ServingTable) -> None:
        self.base_name = base_name
        self.created = int(time.time())
        self._service = service
        self._table = table

    async def resolve(self, model: str, principal: Principal) -> AdapterSpec | None:
        """``None`` for the base model; raises ModelNotFound for names this server has
        not and can not fetch, and for adapters ``principal`` may not use."""
        served = await self.resolve_served(model, principal)
        return None if served is None else served.spec

    async def resolve_served(self, model: str, principal: Principal) -> ServedAdapter | None:
        """:meth:`resolve`, with the version's manifest (its task defaults) beside the
        engine's spec."""
        principal.check_model(model)
        if model == self.base_name:
            return None
        try:
            manifest = await self._service.resolve(model)
        except (AdapterNotFound, InvalidName, InvalidHubRepo):
            # Not a name this server has or could fetch: OpenAI's answer is model_not_found.
            raise ModelNotFound(model) from None
        return ServedAdapter(model, self._table.spec_for(manifest), manifest)

    async def resolve_ref(self, ref: str) -> tuple[Manifest, AdapterSpec]:
        """An admin API ``name[:tag]`` (AdapterNotFound, a 404, if unknown)."""
        manifest = await self._service.resolve(ref)
        return manifest, self._table.spec_for(manifest)

    async def adapters(self, *, start: str | None = None, limit: int | None = None
                       ) -> list[ServedAdapter]:
        """Every servable adapter id: ``name`` for the latest tag, ``name:tag`` for others,
        in (name, tag) order; or those of at most ``limit`` names from name ``start``."""
        out = []
        for entry, versions in await self._service.list_versions(start=start, limit=limit):
            for tag, manifest in sorted(versions.items()):
                model_id = entry.name if tag == DEFAULT_TAG else f"{entry.name}:{tag}"
                named = (manifest if manifest.name == entry.name
                         else manifest.model_copy(update={"name": entry.name}))
                out.append(ServedAdapter(model_id, self._table.spec_for(named), named))
        return out

    async def register(self, manifest: Manifest, *, load: bool) -> AdapterSpec:
        """A version just stored: give it its record, and load it now if asked."""
        spec = self._table.spec_for(manifest)
        if load:
            await self._table.load(spec)
        return spec

    async def delete(self, ref: str) -> None:
        """Delete ``name`` or ``name:tag`` from the store, and retire from the engine the
        versions nothing else points at (now, or when their last running request ends)."""
        await self.retire_unreferenced(await self._service.delete(ref))

    async def retire_unreferenced(self, digests: set[str]) -> None:
        """Refs to ``digests`` went (a delete, a watched adapter gone): retire from the
        engine those nothing else points at, now or when their last request ends."""
        await self._table.retire(digests - await self._service.referenced())
        await self._service.collect()  # files of versions nothing uses any more
