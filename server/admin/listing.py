"""Reading the adapter registry: ``GET /v1/adapters``, ``/v1/adapters/{name}`` and
``/v1/admission`` (inference scope; a key sees only the adapters its policy names)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from ...adapters.errors import AdapterNotFound
from ...adapters.manifest import Manifest
from ...adapters.names import validate_name
from ..auth import Principal, PrincipalDep, Scope
from ..deps import ModelsDep, ServiceDep, TableDep, WatcherDep
from ..serving.residency import Residencies
from .protocol import (
    AdapterInfo,
    AdapterList,
    AdapterVersion,
    AdmissionPolicy,
    RefusedAdapter,
    WatchedSource,
)
from .responses import COMMON, errors

router = APIRouter(prefix="/v1", tags=["adapters"], responses=errors(*COMMON, why={
    403: "The key lacks the inference scope (a metrics-only key)"}))


def visible(principal: Principal, name: str) -> bool:
    """Whether ``principal`` may know the adapter ``name`` exists."""
    return principal.may_use(name) or principal.may_manage(name)


@router.get("/adapters", response_model=AdapterList, summary="Every stored adapter")
async def list_adapters(service: ServiceDep, table: TableDep, models: ModelsDep,
                        watcher: WatcherDep, principal: PrincipalDep) -> AdapterList:
    entries = await service.list_versions()
    residencies = await table.residency()
    data: list[AdapterInfo] = []
    sizes: dict[str, int] = {}  # digest -> bytes: each stored version counted once
    for e, versions in entries:
        if not visible(principal, e.name):
            continue
        sizes.update((m.digest, m.size_bytes) for m in versions.values())
        data.append(info(e.name, dict(e.tags), e.latest, residencies))
    refused, watched = [], []
    if watcher is not None:
        refused = [RefusedAdapter(name=r.name, tag=r.tag, source=r.source, code=r.code,
                                  message=r.message, since=_utc(r.since))
                   for r in watcher.refusals() if visible(principal, r.name)]
        if Scope.ADMIN in principal.scopes:  # bucket names are the operator's business
            watched = [WatchedSource(source=s.source, error=s.error, registered=s.registered,
                                     last_scan=None if s.last_scan is None
                                     else _utc(s.last_scan))
                       for s in watcher.states()]
    return AdapterList(data=data, base_model=models.base_name,
                       base_model_bytes=service.base_model_bytes,
                       stored_bytes=sum(sizes.values()), refused=refused, watched=watched)


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


@router.get("/adapters/{name}", response_model=AdapterInfo, responses=errors(404),
            summary="One adapter")
async def get_adapter(name: str, service: ServiceDep, table: TableDep,
                      principal: PrincipalDep) -> AdapterInfo:
    validate_name(name)
    entry = await service.entry(name) if visible(principal, name) else None
    if entry is None:
        raise AdapterNotFound(f"adapter {name} not found")
    residencies = await table.residency() if entry.latest else None
    return info(name, dict(entry.tags), entry.latest, residencies)


@router.get("/admission", response_model=AdmissionPolicy,
            summary="The checks adapters must pass here (for checking locally first)")
async def admission_policy(service: ServiceDep) -> AdmissionPolicy:
    limits = service.limits
    return AdmissionPolicy(
        base_model=service.base_spec,
        max_lora_rank=limits.max_lora_rank, max_total_bytes=limits.max_total_bytes,
        max_files=limits.max_files, max_virtual_tokens=limits.max_virtual_tokens,
        peft_types=sorted(limits.peft_types),
    )


def info(name: str, tags: dict[str, str], latest: Manifest | None,
         residencies: Residencies | None) -> AdapterInfo:
    residency = residencies.of(latest.digest) if latest and residencies else None
    return AdapterInfo(
        name=name, tags=tags, latest=AdapterVersion.of(latest) if latest else None,
        residency=residency, loaded=residency in ("gpu", "cpu"),
    )
