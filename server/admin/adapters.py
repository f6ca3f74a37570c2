"""``/v1/adapters``: upload, pull, list, show, delete, tag, load, unload; ``/v1/admission``.

Every adapter, however it arrives (archive upload, hub pull, server-side path,
``--adapter``), passes the same admission checks and becomes an immutable version in the
store. Errors map to statuses in ``server/errors.py``, the one table.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect

from ...adapters.errors import AdapterNotFound, TooLarge
from ...adapters.manifest import Manifest
from ...adapters.names import DEFAULT_TAG, validate_name
from ...adapters.service import AdapterService
from ...adapters.sources.hub import HubRef
from ..deps import ModelsDep, ServiceDep, TableDep
from ..errors import InvalidRequest
from ..openai.protocol import ErrorResponse
from ..serving.models import ServedModels
from ..serving.residency import Residencies
from ..serving.table import ServingTable
from .protocol import (
    AdapterInfo,
    AdapterList,
    AdapterVersion,
    AdmissionPolicy,
    Deleted,
    LoadState,
    PullRequest,
    TaggedVersion,
    TagRequest,
)
from .pull_stream import pull_events

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed name, archive or path"},
    404: {"model": ErrorResponse, "description": "No such adapter, tag or version"},
    503: {"model": ErrorResponse, "description": "Model loading, or store busy (Retry-After)"},
}
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorResponse, "description": "Archive or adapter over the size cap"},
    422: {"model": ErrorResponse, "description": "Adapter refused by admission (code says why)"},
}
ARCHIVE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The adapter dir as a tar, tar.gz or zip archive (format sniffed).",
        "content": {"application/octet-stream": {"schema": {"type": "string",
                                                            "format": "binary"}}},
    }
}
PULL_ERRORS: dict[int | str, dict[str, Any]] = {
    201: {"content": {"application/x-ndjson": {}},
          "description": "Stored. With stream=true: NDJSON progress lines, the last one "
                         "'success' (with this body's fields) or 'error' (with 'error')"},
    403: {"model": ErrorResponse, "description": "Repo not on --hub-allow, or the hub "
                                                 "refused access (gated, private)"},
    413: {"model": ErrorResponse, "description": "Adapter files over the size cap"},
    422: {"model": ErrorResponse, "description": "Not an acceptable adapter (code says why)"},
    502: {"model": ErrorResponse, "description": "Hub unreachable or download broke off"},
}

NameQuery = Annotated[str, Query(description="Adapter name (a-z 0-9 . _ -)")]
TagQuery = Annotated[str, Query(description="Tag to point at the new version")]

router = APIRouter(prefix="/v1", tags=["adapters"], responses=ERRORS)


@router.post("/adapters", response_model=TaggedVersion, status_code=201,
             responses=UPLOAD_ERRORS, openapi_extra=ARCHIVE_BODY,
             summary="Upload an adapter archive; admit, store and tag it")
async def upload_adapter(request: Request, service: ServiceDep, name: NameQuery,
                         tag: TagQuery = DEFAULT_TAG) -> TaggedVersion:
    cap = service.limits.max_total_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        # Refuse before reading a byte; without the header the stream is capped instead.
        raise TooLarge(f"upload of {declared} bytes exceeds {cap} bytes")
    try:
        manifest = await service.upload(request.stream(), name, tag)
    except ClientDisconnect:
        raise InvalidRequest("upload incomplete: the client disconnected; nothing stored"
                             ) from None
    return TaggedVersion(name=name, tag=tag, version=AdapterVersion.of(manifest))


@router.post("/adapters/pull", response_model=TaggedVersion, status_code=201,
             responses=PULL_ERRORS,
             summary="Pull an adapter from a Hugging Face Hub repo; admit, store and tag it")
async def pull_adapter(body: PullRequest, service: ServiceDep) -> Any:
    href = HubRef.parse(body.repo, body.revision)
    # Refusals that need no download answer with their own status, even when streaming.
    name = service.check_pull(href, body.name, body.tag)
    if not body.stream:
        manifest = await service.pull(href, name=name, tag=body.tag)
        return TaggedVersion(name=name, tag=body.tag, version=AdapterVersion.of(manifest))
    return StreamingResponse(pull_events(service, href, name, body.tag), status_code=201,
                             media_type="application/x-ndjson")


@router.get("/adapters", response_model=AdapterList, summary="Every stored adapter")
async def list_adapters(service: ServiceDep, table: TableDep, models: ModelsDep
                        ) -> AdapterList:
    entries = await service.list_versions()
    residencies = await table.residency()
    data: list[AdapterInfo] = []
    sizes: dict[str, int] = {}  # digest -> bytes: each stored version counted once
    for e, versions in entries:
        sizes.update((m.digest, m.size_bytes) for m in versions.values())
        data.append(_info(e.name, dict(e.tags), e.latest, residencies))
    return AdapterList(data=data, base_model=models.base_name,
                       base_model_bytes=service.base_model_bytes,
                       stored_bytes=sum(sizes.values()))


@router.get("/adapters/{name}", response_model=AdapterInfo, summary="One adapter")
async def get_adapter(name: str, service: ServiceDep, table: TableDep) -> AdapterInfo:
    return await _one(service, table, name)


@router.delete("/adapters/{ref}", response_model=Deleted,
               summary="Delete an adapter (name) or one of its tags (name:tag)")
async def delete_adapter(ref: str, models: ModelsDep) -> Deleted:
    await models.delete(ref)
    return Deleted(id=ref)


@router.put("/adapters/{name}/tags/{tag}", response_model=TaggedVersion,
            summary="Point name:tag at a stored version (promote, pin, roll back)")
async def put_tag(name: str, tag: str, body: TagRequest, service: ServiceDep
                  ) -> TaggedVersion:
    manifest = await service.tag(name, tag, body.digest)
    return TaggedVersion(name=name, tag=tag, version=AdapterVersion.of(manifest))


@router.post("/adapters/{ref}/load", response_model=LoadState,
             summary="Load into engine memory now (warm the first request)")
async def load_adapter(ref: str, models: ModelsDep, table: TableDep) -> LoadState:
    return await _set_loaded(models, table, ref, loaded=True)


@router.post("/adapters/{ref}/unload", response_model=LoadState,
             summary="Drop from engine memory (stays stored; reloads on next use)")
async def unload_adapter(ref: str, models: ModelsDep, table: TableDep) -> LoadState:
    return await _set_loaded(models, table, ref, loaded=False)


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


async def _set_loaded(models: ServedModels, table: ServingTable, ref: str, *, loaded: bool
                      ) -> LoadState:
    manifest, spec = await models.resolve_ref(ref)
    await (table.load(spec) if loaded else table.unload(spec))
    return LoadState(name=ref, digest=manifest.digest, loaded=loaded)


async def _one(service: AdapterService, table: ServingTable, name: str) -> AdapterInfo:
    validate_name(name)
    entry = await service.entry(name)
    if entry is None:
        raise AdapterNotFound(f"adapter {name} not found")
    residencies = await table.residency() if entry.latest else None
    return _info(name, dict(entry.tags), entry.latest, residencies)


def _info(name: str, tags: dict[str, str], latest: Manifest | None,
          residencies: Residencies | None) -> AdapterInfo:
    residency = residencies.of(latest.digest) if latest and residencies else None
    return AdapterInfo(
        name=name, tags=tags, latest=AdapterVersion.of(latest) if latest else None,
        residency=residency, loaded=residency in ("gpu", "cpu"),
    )
