"""Request and response bodies of the adapter admin API (``/v1/adapters``) and of the
vLLM-compatible ``/v1/load_lora_adapter`` / ``/v1/unload_lora_adapter``."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ...adapters.admission import BaseModelSpec
from ...adapters.defaults import TaskDefaults
from ...adapters.manifest import DIGEST_PATTERN, Manifest
from ...adapters.names import DEFAULT_TAG
from ..engine.interface import Residency

#: ``source`` URLs of a hub repo: ``hf://owner/name[@revision]``.
HF_SCHEME = "hf://"


class AdapterVersion(BaseModel):
    """One immutable stored version (content-addressed by ``digest``)."""

    digest: str
    peft_type: str
    rank: int | None = None
    alpha: float | None = None
    target_modules: list[str] = Field(default_factory=list)
    #: Prompt and prefix tuning: positions the adapter puts in front of every prompt.
    num_virtual_tokens: int | None = None
    size_bytes: int
    created_at: datetime
    source: str
    #: Non-fatal admission findings (dropped files, loose base-model name mismatch).
    warnings: list[str] = Field(default_factory=list)
    #: The version's task defaults (its ``hotswap.json``): applied to requests that do
    #: not set these fields. None: the version has none.
    defaults: TaskDefaults | None = None

    @classmethod
    def of(cls, m: Manifest) -> AdapterVersion:
        return cls(
            digest=m.digest, peft_type=m.peft_type, rank=m.rank, alpha=m.alpha,
            target_modules=list(m.target_modules), num_virtual_tokens=m.num_virtual_tokens,
            size_bytes=m.size_bytes,
            created_at=m.created_at, source=_public_source(m.source),
            warnings=list(m.warnings), defaults=m.defaults,
        )


def _public_source(source: str) -> str:
    """``path:/srv/x`` names a server path: the API says only that it was a path import."""
    return "path" if source.startswith("path:") else source


class AdapterInfo(BaseModel):
    object: Literal["adapter"] = "adapter"
    name: str
    #: tag -> digest; ``latest`` is what ``model=<name>`` serves.
    tags: dict[str, str]
    #: The version ``latest`` points to (None if the name has only other tags).
    latest: AdapterVersion | None = None
    #: Where this server's engine holds ``latest`` now: "gpu" (in a slot a batch can
    #: use; host memory on the CPU build), "cpu" (engine's host cache) or "disk" (not
    #: loaded). None if there is no ``latest`` or the engine could not tell.
    residency: Residency | None = None
    #: Whether the engine holds ``latest`` in memory now (residency "gpu" or "cpu").
    loaded: bool = False


class RefusedAdapter(BaseModel):
    """An adapter a watched source holds that is not served as it is there, and why."""

    name: str
    tag: str
    #: The watched source (``s3://...``; ``path`` for a directory of this server).
    source: str
    code: str
    message: str
    since: datetime


class WatchedSource(BaseModel):
    """One ``--watch`` source as this server's last listing of it found it."""

    source: str
    last_scan: datetime | None
    #: Why the last listing failed (the adapters it registered stay); None: it worked.
    error: str | None
    #: Adapters it serves as they are in the source.
    registered: int


class AdapterList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AdapterInfo]
    #: Adapters of --watch sources that were refused (admission, a taken name, a failed
    #: fetch); each stays listed until its files change or go.
    refused: list[RefusedAdapter] = Field(default_factory=list)
    #: The --watch sources (empty: none).
    watched: list[WatchedSource] = Field(default_factory=list)
    base_model: str
    #: Bytes of one full copy of the base model's weights, if known.
    base_model_bytes: int | None = None
    #: Bytes of every stored version any tag points to (each counted once).
    stored_bytes: int


class TaggedVersion(BaseModel):
    """Where ``name:tag`` points after an upload or a tag change."""

    object: Literal["adapter.tag"] = "adapter.tag"
    name: str
    tag: str
    version: AdapterVersion


class TagRequest(BaseModel):
    digest: str = Field(pattern=DIGEST_PATTERN.pattern, description="sha256 of a version")


class Deleted(BaseModel):
    object: Literal["adapter.deleted"] = "adapter.deleted"
    id: str
    deleted: bool = True


class LoadState(BaseModel):
    """Answer of ``POST /v1/adapters/{ref}/load`` and ``/unload``."""

    object: Literal["adapter.residency"] = "adapter.residency"
    name: str
    digest: str
    loaded: bool


class LoadLoraAdapterRequest(BaseModel):
    """vLLM's ``/v1/load_lora_adapter`` body."""

    lora_name: str
    lora_path: str


class UnloadLoraAdapterRequest(BaseModel):
    """vLLM's ``/v1/unload_lora_adapter`` body (``lora_int_id`` is accepted and ignored,
    as ids are the server's business here)."""

    lora_name: str
    lora_int_id: int | None = None


class PullRequest(BaseModel):
    """``POST /v1/adapters/pull``: fetch an adapter from a Hugging Face Hub repo or from
    S3-compatible object storage. Give ``repo`` or ``source``, not both."""

    model_config = ConfigDict(extra="forbid")

    repo: str | None = Field(default=None, description="Hub repo id, 'owner/name' (or "
                             "'owner/name@revision')", examples=["someone/llama-sql-lora"])
    source: str | None = Field(default=None, description="Where from, as a URL: "
                               "'s3://bucket/prefix' (the adapter files directly under "
                               "prefix/; the bucket must be on --s3-allow) or "
                               "'hf://owner/name[@revision]' (as `repo`)",
                               examples=["s3://adapters/sql-lora"])
    revision: str | None = Field(default=None, description="Hub only: branch, tag or "
                                 "commit; pinned to the commit it resolves to. Default: main")
    name: str | None = Field(default=None, description="Adapter name. Default: "
                             "'owner--name', lower-cased, for a hub repo; the prefix's last "
                             "component for s3://")
    tag: str = Field(default=DEFAULT_TAG, description="Tag to point at the pulled version")
    stream: bool = Field(default=False, description="Answer with NDJSON progress lines "
                         "(status: pulling | downloading | success | error) instead of "
                         "one JSON body at the end")

    @model_validator(mode="after")
    def _one_origin(self) -> PullRequest:
        if (self.repo is None) == (self.source is None):
            raise ValueError("give exactly one of 'repo' (a hub repo id) and 'source' "
                             "(s3://bucket/prefix or hf://owner/name)")
        if self.revision is not None and self.source is not None \
                and not self.source.startswith(HF_SCHEME):
            raise ValueError("'revision' is for hub repos only")
        return self


class AdmissionPolicy(BaseModel):
    """``GET /v1/admission``: what an adapter must pass here, so a client (adapterctl
    upload) can run the same checks locally before sending a byte."""

    object: Literal["admission.policy"] = "admission.policy"
    #: The served base model's shape facts; None while its config is unknown (adapters
    #: are then refused).
    base_model: BaseModelSpec | None
    max_lora_rank: int
    max_total_bytes: int
    max_files: int
    max_virtual_tokens: int
    peft_types: list[str]
