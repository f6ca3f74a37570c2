"""Adapter admin API (``/v1/adapters``) and vLLM's ``load_lora_adapter`` / ``unload``.

Every adapter, however it arrives (archive upload, server-side path, ``--adapter``),
passes the same admission checks and becomes an immutable version in the store.
Registry errors map to statuses in ``server/errors.py``, the one table.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse

from ...adapters.errors import AdapterNotFound, TooLarge
from ...adapters.names import validate_name
from ..adapter_protocol import (
    AdapterInfo,
    AdapterList,
    AdapterVersion,
    Deleted,
    LoadLoraAdapterRequest,
    Residency,
    TaggedVersion,
    TagRequest,
    UnloadLoraAdapterRequest,
)
from ..catalog import Catalog
from ..errors import AdapterExists
from ..protocol import ErrorResponse
from ..state import CatalogDep

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

NameQuery = Annotated[str, Query(description="Adapter name (a-z 0-9 . _ -)")]
TagQuery = Annotated[str, Query(description="Tag to point at the new version")]

router = APIRouter(prefix="/v1", tags=["adapters"], responses=ERRORS)


async def _info(catalog: Catalog, name: str) -> AdapterInfo:
    validate_name(name)
    entry = next((e for e in await catalog.registry.list() if e.name == name), None)
    if entry is None:
        raise AdapterNotFound(f"adapter {name} not found")
    latest = entry.latest
    return AdapterInfo(
        name=name, tags=dict(entry.tags),
        latest=AdapterVersion.of(latest) if latest else None,
        loaded=latest is not None and catalog.is_loaded(latest.digest),
    )


@router.post("/adapters", response_model=TaggedVersion, status_code=201,
             responses=UPLOAD_ERRORS, openapi_extra=ARCHIVE_BODY,
             summary="Upload an adapter archive; admit, store and tag it")
async def upload_adapter(request: Request, catalog: CatalogDep, name: NameQuery,
                         tag: TagQuery = "latest") -> TaggedVersion:
    cap = catalog.registry.limits.max_total_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        # Refuse before reading a byte; without the header the stream is capped instead.
        raise TooLarge(f"upload of {declared} bytes exceeds {cap} bytes")
    manifest = await catalog.registry.upload(request.stream(), name, tag)
    return TaggedVersion(name=name, tag=tag, version=AdapterVersion.of(manifest))


@router.get("/adapters", response_model=AdapterList, summary="Every stored adapter")
async def list_adapters(catalog: CatalogDep) -> AdapterList:
    entries = await catalog.registry.list()
    data, sizes = [], {}
    for e in entries:
        for digest in e.tags.values():
            if digest not in sizes:
                sizes[digest] = (await catalog.registry.version(digest)).size_bytes
        data.append(AdapterInfo(
            name=e.name, tags=dict(e.tags),
            latest=AdapterVersion.of(e.latest) if e.latest else None,
            loaded=e.latest is not None and catalog.is_loaded(e.latest.digest),
        ))
    return AdapterList(data=data, base_model=catalog.base_name,
                       base_model_bytes=catalog.registry.base_model_bytes,
                       stored_bytes=sum(sizes.values()))


@router.get("/adapters/{name}", response_model=AdapterInfo, summary="One adapter")
async def get_adapter(name: str, catalog: CatalogDep) -> AdapterInfo:
    return await _info(catalog, name)


@router.delete("/adapters/{ref}", response_model=Deleted,
               summary="Delete an adapter (name) or one of its tags (name:tag)")
async def delete_adapter(ref: str, catalog: CatalogDep) -> Deleted:
    await catalog.delete(ref)
    return Deleted(id=ref)


@router.put("/adapters/{name}/tags/{tag}", response_model=TaggedVersion,
            summary="Point name:tag at a stored version (promote, pin, roll back)")
async def put_tag(name: str, tag: str, body: TagRequest, catalog: CatalogDep
                  ) -> TaggedVersion:
    manifest = await catalog.registry.tag(name, tag, body.digest)
    return TaggedVersion(name=name, tag=tag, version=AdapterVersion.of(manifest))


@router.post("/adapters/{ref}/load", response_model=Residency,
             summary="Load into engine memory now (warm the first request)")
async def load_adapter(ref: str, catalog: CatalogDep) -> Residency:
    manifest = await catalog.registry.resolve(ref)
    await catalog.load(catalog.spec_for(manifest))
    return Residency(name=ref, digest=manifest.digest, loaded=True)


@router.post("/adapters/{ref}/unload", response_model=Residency,
             summary="Drop from engine memory (stays stored; reloads on next use)")
async def unload_adapter(ref: str, catalog: CatalogDep) -> Residency:
    manifest = await catalog.registry.resolve(ref)
    await catalog.unload(catalog.spec_for(manifest))
    return Residency(name=ref, digest=manifest.digest, loaded=False)


# --- vLLM compatibility ------------------------------------------------------------------

PLAIN_OK: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {}}, "description": "Success message, as vLLM answers"},
    403: {"model": ErrorResponse, "description": "lora_path outside every import root"},
    422: {"model": ErrorResponse, "description": "Adapter refused by admission"},
}


@router.post("/load_lora_adapter", response_class=PlainTextResponse, responses=PLAIN_OK,
             summary="vLLM-compatible: import a server-side adapter dir and load it")
async def load_lora_adapter(body: LoadLoraAdapterRequest, catalog: CatalogDep
                            ) -> PlainTextResponse:
    name = validate_name(body.lora_name)
    try:
        await catalog.registry.resolve(name)
    except AdapterNotFound:
        pass
    else:
        raise AdapterExists(f"The lora adapter '{name}' has already been loaded.",
                            param="lora_name")
    path = await catalog.registry.check_import_path(body.lora_path)
    manifest = await catalog.registry.import_dir(name, path)
    await catalog.load(catalog.spec_for(manifest))
    return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")


@router.post("/unload_lora_adapter", response_class=PlainTextResponse, responses=PLAIN_OK,
             summary="vLLM-compatible: stop serving an adapter (deletes the name)")
async def unload_lora_adapter(body: UnloadLoraAdapterRequest, catalog: CatalogDep
                              ) -> PlainTextResponse:
    await catalog.delete(body.lora_name)
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")
