"""Adapter admin API (``/v1/adapters``) and vLLM's ``load_lora_adapter`` / ``unload``.

Every adapter, however it arrives (archive upload, server-side path, ``--adapter``),
passes the same admission checks and becomes an immutable version in the store.
Registry errors map to statuses in ``server/errors.py``, the one table.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.requests import ClientDisconnect

from ...adapters.errors import AdapterNotFound, TooLarge
from ...adapters.names import validate_name
from ...adapters.sources.hub import HubRef
from ..adapter_protocol import (
    AdapterInfo,
    AdapterList,
    AdapterVersion,
    AdmissionPolicy,
    Deleted,
    LoadLoraAdapterRequest,
    LoadState,
    PullRequest,
    TaggedVersion,
    TagRequest,
    UnloadLoraAdapterRequest,
)
from ..catalog import Catalog
from ..errors import AdapterExists, InvalidRequest, from_exception, to_body
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
    entry = await catalog.registry.entry(name)
    if entry is None:
        raise AdapterNotFound(f"adapter {name} not found")
    latest = entry.latest
    residency = (await catalog.residency()).of(latest.digest) if latest else None
    return AdapterInfo(
        name=name, tags=dict(entry.tags),
        latest=AdapterVersion.of(latest) if latest else None,
        residency=residency, loaded=residency in ("gpu", "cpu"),
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
    try:
        manifest = await catalog.registry.upload(request.stream(), name, tag)
    except ClientDisconnect:
        raise InvalidRequest("upload incomplete: the client disconnected; nothing stored"
                             ) from None
    return TaggedVersion(name=name, tag=tag, version=AdapterVersion.of(manifest))


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


@router.post("/adapters/pull", response_model=TaggedVersion, status_code=201,
             responses=PULL_ERRORS,
             summary="Pull an adapter from a Hugging Face Hub repo; admit, store and tag it")
async def pull_adapter(body: PullRequest, catalog: CatalogDep) -> Any:
    href = HubRef.parse(body.repo, body.revision)
    registry = catalog.registry
    # Refusals that need no download answer with their own status, even when streaming.
    name = registry.check_pull(href, body.name, body.tag)
    if not body.stream:
        manifest = await registry.pull(href, name=name, tag=body.tag)
        return TaggedVersion(name=name, tag=body.tag, version=AdapterVersion.of(manifest))
    return StreamingResponse(_pull_events(catalog, href, name, body.tag), status_code=201,
                             media_type="application/x-ndjson")


async def _pull_events(catalog: Catalog, href: HubRef, name: str, tag: str
                       ) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    progress: asyncio.Queue[tuple[int, int]] = asyncio.Queue()

    def on_progress(done: int, total: int) -> None:  # from the download thread
        loop.call_soon_threadsafe(progress.put_nowait, (done, total))

    # A task of its own: a client that disconnects stops the stream, not the pull.
    pull = asyncio.create_task(catalog.registry.pull(href, name=name, tag=tag,
                                                     on_progress=on_progress))
    pull.add_done_callback(_retrieve)  # a failure nobody streams any more is not "lost"
    yield _line({"status": "pulling", "repo": href.repo_id, "revision": href.revision})
    update: asyncio.Task[tuple[int, int]] | None = None
    try:
        while not pull.done():
            update = asyncio.create_task(progress.get())
            await asyncio.wait({pull, update}, return_when=asyncio.FIRST_COMPLETED)
            if update.done():
                done, total = update.result()
                yield _line({"status": "downloading", "completed": done, "total": total})
    finally:
        if update is not None:
            update.cancel()
    try:
        manifest = pull.result()
    except Exception as exc:  # every failure becomes an error line
        yield _line({"status": "error", **to_body(from_exception(exc))})
        return
    result = TaggedVersion(name=name, tag=tag, version=AdapterVersion.of(manifest))
    yield _line({"status": "success", **result.model_dump(mode="json")})


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _line(payload: dict[str, Any]) -> str:
    return json.dumps(payload) + "\n"


@router.get("/adapters", response_model=AdapterList, summary="Every stored adapter")
async def list_adapters(catalog: CatalogDep) -> AdapterList:
    entries = await catalog.registry.list_versions()
    residencies = await catalog.residency()
    data: list[AdapterInfo] = []
    sizes: dict[str, int] = {}  # digest -> bytes: each stored version counted once
    for e, versions in entries:
        sizes.update((m.digest, m.size_bytes) for m in versions.values())
        residency = residencies.of(e.latest.digest) if e.latest else None
        data.append(AdapterInfo(
            name=e.name, tags=dict(e.tags),
            latest=AdapterVersion.of(e.latest) if e.latest else None,
            residency=residency, loaded=residency in ("gpu", "cpu"),
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


@router.post("/adapters/{ref}/load", response_model=LoadState,
             summary="Load into engine memory now (warm the first request)")
async def load_adapter(ref: str, catalog: CatalogDep) -> LoadState:
    return await _set_loaded(catalog, ref, loaded=True)


@router.post("/adapters/{ref}/unload", response_model=LoadState,
             summary="Drop from engine memory (stays stored; reloads on next use)")
async def unload_adapter(ref: str, catalog: CatalogDep) -> LoadState:
    return await _set_loaded(catalog, ref, loaded=False)


async def _set_loaded(catalog: Catalog, ref: str, *, loaded: bool) -> LoadState:
    manifest = await catalog.registry.resolve(ref)
    spec = catalog.spec_for(manifest)
    await (catalog.load(spec) if loaded else catalog.unload(spec))
    return LoadState(name=ref, digest=manifest.digest, loaded=loaded)


@router.get("/admission", response_model=AdmissionPolicy,
            summary="The checks adapters must pass here (for checking locally first)")
async def admission_policy(catalog: CatalogDep) -> AdmissionPolicy:
    limits = catalog.registry.limits
    return AdmissionPolicy(
        base_model=catalog.registry.base_spec,
        max_lora_rank=limits.max_lora_rank, max_total_bytes=limits.max_total_bytes,
        max_files=limits.max_files, max_virtual_tokens=limits.max_virtual_tokens,
        peft_types=sorted(limits.peft_types),
    )


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
