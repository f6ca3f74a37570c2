"""Changing the adapter registry (admin scope): upload, pull, delete, tag, load, unload.

Every adapter, however it arrives (archive upload, hub pull, server-side path,
``--adapter``), passes the same admission checks and becomes an immutable version in the
store. Errors map to statuses in ``server/errors.py``, the one table.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect

from ...adapters.errors import TooLarge, VersionNotFound
from ...adapters.manifest import Manifest
from ...adapters.names import DEFAULT_TAG
from ...adapters.sources import s3
from ...adapters.sources.hub import HubRef
from ...adapters.sources.s3 import S3Ref
from ..auth import PrincipalDep
from ..deps import ModelsDep, ServiceDep, TableDep
from ..errors import InvalidRequest
from ..serving.models import ServedModels
from ..serving.table import ServingTable
from .listing import visible
from .protocol import (
    HF_SCHEME,
    AdapterVersion,
    Deleted,
    LoadState,
    PullRequest,
    TaggedVersion,
    TagRequest,
)
from .pull_stream import pull_events
from .responses import COMMON, JSON_BODY, Responses, errors

UPLOAD_ERRORS = errors(408, 413, 415, 422, 429, 507, why={
    408: "The archive stopped arriving (--upload-idle-timeout); nothing stored",
    413: "Archive or adapter over the size cap",
    415: "Content-Type not an archive type (application/octet-stream, ...)",
})
ARCHIVE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The adapter dir as a tar, tar.gz or zip archive (format sniffed).",
        "content": {"application/octet-stream": {"schema": {"type": "string",
                                                            "format": "binary"}}},
    }
}
PULL_ERRORS: Responses = {
    201: {"content": {"application/x-ndjson": {}},
          "description": "Stored. With stream=true: NDJSON progress lines, the last one "
                         "'success' (with this body's fields) or 'error' (with 'error')"},
    **errors(*JSON_BODY, 403, 404, 409, 422, 502, 507, why={
        403: "Repo not on --hub-allow or bucket not on --s3-allow, the hub or object "
             "storage refused access (gated, private, credentials), the key lacks the "
             "scope or the name is outside its policy",
        404: "No such hub repo or revision; no such bucket, or nothing under the prefix",
        409: "An S3 object changed while it was downloaded (retry)",
        502: "The hub or object storage could not be reached, or a download broke off",
    }),
}

NameQuery = Annotated[str, Query(description="Adapter name (a-z 0-9 . _ -)")]
TagQuery = Annotated[str, Query(description="Tag to point at the new version")]

router = APIRouter(prefix="/v1", tags=["adapters"], responses=errors(*COMMON))


@router.post("/adapters", response_model=TaggedVersion, status_code=201,
             responses=UPLOAD_ERRORS, openapi_extra=ARCHIVE_BODY,
             summary="Upload an adapter archive; admit, store and tag it")
async def upload_adapter(request: Request, service: ServiceDep, principal: PrincipalDep,
                         name: NameQuery, tag: TagQuery = DEFAULT_TAG) -> TaggedVersion:
    principal.check_manage(name)
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
             summary="Pull an adapter from a Hugging Face Hub repo or S3-compatible object "
                     "storage; admit, store and tag it")
async def pull_adapter(body: PullRequest, service: ServiceDep, principal: PrincipalDep
                       ) -> Any:
    # start(on_progress=...): the pull, the same call streaming or not.
    start: Callable[..., Awaitable[Manifest]]
    if body.source is not None and body.source.startswith(s3.SCHEME):
        ref = S3Ref.parse(body.source)
        # Refusals that need no download answer with their own status, even streaming.
        name = service.check_s3_pull(ref, body.name, body.tag)
        principal.check_manage(name)
        start = functools.partial(service.pull_s3, ref, name=name, tag=body.tag)
        first: dict[str, Any] = {"source": str(ref)}
    else:
        href = _hub_ref(body)
        name = service.check_pull(href, body.name, body.tag)
        principal.check_manage(name)
        start = functools.partial(service.pull, href, name=name, tag=body.tag)
        first = {"repo": href.repo_id, "revision": href.revision}
    if not body.stream:
        manifest = await start()
        return TaggedVersion(name=name, tag=body.tag, version=AdapterVersion.of(manifest))
    return StreamingResponse(pull_events(start, first, name, body.tag), status_code=201,
                             media_type="application/x-ndjson")


def _hub_ref(body: PullRequest) -> HubRef:
    if body.repo is not None:
        return HubRef.parse(body.repo, body.revision)
    assert body.source is not None  # the request model asks for one of the two
    if not body.source.startswith(HF_SCHEME):
        raise InvalidRequest(f"source {body.source!r}: expected s3://bucket/prefix or "
                             "hf://owner/name[@revision]", param="source")
    return HubRef.parse(body.source.removeprefix(HF_SCHEME), body.revision)


@router.delete("/adapters/{ref}", response_model=Deleted, responses=errors(404),
               summary="Delete an adapter (name) or one of its tags (name:tag)")
async def delete_adapter(ref: str, models: ModelsDep, principal: PrincipalDep) -> Deleted:
    principal.check_manage(ref)
    await models.delete(ref)
    return Deleted(id=ref)


@router.put("/adapters/{name}/tags/{tag}", response_model=TaggedVersion,
            responses=errors(*JSON_BODY, 404),
            summary="Point name:tag at a stored version (promote, pin, roll back)")
async def put_tag(name: str, tag: str, body: TagRequest, service: ServiceDep,
                  principal: PrincipalDep) -> TaggedVersion:
    principal.check_manage(name)
    # A key may only point its names at content some name it may see already serves:
    # otherwise tagging would serve (and confirm the existence of) other tenants' weights.
    holders = [e.name for e in await service.list() if body.digest in e.tags.values()]
    if not any(visible(principal, n) for n in holders):
        raise VersionNotFound(f"no stored version {body.digest}")
    manifest = await service.tag(name, tag, body.digest)
    return TaggedVersion(name=name, tag=tag, version=AdapterVersion.of(manifest))


@router.post("/adapters/{ref}/load", response_model=LoadState, responses=errors(404, 422),
             summary="Load into engine memory now (warm the first request)")
async def load_adapter(ref: str, models: ModelsDep, table: TableDep,
                       principal: PrincipalDep) -> LoadState:
    principal.check_manage(ref)
    return await _set_loaded(models, table, ref, loaded=True)


@router.post("/adapters/{ref}/unload", response_model=LoadState, responses=errors(404),
             summary="Drop from engine memory (stays stored; reloads on next use)")
async def unload_adapter(ref: str, models: ModelsDep, table: TableDep,
                         principal: PrincipalDep) -> LoadState:
    principal.check_manage(ref)
    return await _set_loaded(models, table, ref, loaded=False)


async def _set_loaded(models: ServedModels, table: ServingTable, ref: str, *, loaded: bool
                      ) -> LoadState:
    manifest, spec = await models.resolve_ref(ref)
    await (table.load(spec) if loaded else table.unload(spec))
    return LoadState(name=ref, digest=manifest.digest, loaded=loaded)


