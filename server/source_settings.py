"""Where adapters may come from besides uploads: the Hugging Face Hub, S3-compatible
object storage and watched sources (mixed into :class:`~.config.Settings`, so each field
is a ``hotswap serve`` flag and a ``HOTSWAP_*`` variable like any other)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Self

from pydantic import ByteSize, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode

from ..adapters.errors import AdapterError
from ..adapters.names import HUB_ALLOW_PATTERN
from ..adapters.sources.s3 import SCHEME, S3Ref
from ..adapters.watch import parse_source
from ..adapters.watch.sources import DirSource


class SourceSettings(BaseSettings):
    """Pull and watch settings (see the module docstring)."""

    hub_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hugging Face Hub repos that may be pulled: 'owner/name', 'owner' (all of "
        "its repos) or '*'. Repeatable; in env, comma-separated. None by default: pulls are "
        "refused. The token is huggingface_hub's own (HF_TOKEN); the endpoint HF_ENDPOINT.",
        json_schema_extra={"flag": "--hub-allow", "metavar": "REPO|OWNER|*"},
    )
    hub_autoload: bool = Field(
        default=False,
        description="Pull an allowed hub repo on the first request that names it as `model` "
        "('owner/name' or 'owner/name@revision'), once however many requests arrive together.",
    )
    adapter_cache_bytes: ByteSize = Field(
        default=ByteSize(10 << 30),
        ge=0,
        description="Disk budget for adapters pulled from the hub (e.g. 500MB, 10GiB); past "
        "it the least recently used pulls are dropped (and pulled again when needed). "
        "Uploaded and imported adapters are never evicted.",
        json_schema_extra={"metavar": "BYTES"},
    )
    s3_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="S3 bucket, or bucket/prefix (that prefix and below), that pulls "
        "(adapterctl pull s3://...) may read. Repeatable; in env, comma-separated. None by "
        "default: S3 pulls are refused. Endpoint, region and credentials come from the "
        "standard AWS chain (AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, AWS_PROFILE, web "
        "identity).",
        json_schema_extra={"flag": "--s3-allow", "metavar": "BUCKET[/PREFIX]"},
    )
    watch: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Directory or s3://bucket/prefix whose adapter dirs register "
        "themselves: <name>/ as name, <name>/<tag>/ as name:tag; a changed one becomes a "
        "new version, a removed one is unregistered. Repeatable; in env, comma-separated. "
        "Needs no --s3-allow (the operator chose it).",
        json_schema_extra={"flag": "--watch", "metavar": "DIR|s3://BUCKET/PREFIX"},
    )
    watch_interval: float = Field(
        default=30.0, ge=0.5, le=86_400,
        description="Seconds between two listings of each --watch source (+-10% jitter, so "
        "replicas do not list in lockstep).",
        json_schema_extra={"metavar": "SECONDS"},
    )

    @field_validator("hub_allow", "s3_allow", "watch", mode="before")
    @classmethod
    def _split_source_lists(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("hub_allow")
    @classmethod
    def _check_hub_allow(cls, value: list[str]) -> list[str]:
        entries = [v.strip() for v in value]
        for entry in entries:
            if entry != "*" and not HUB_ALLOW_PATTERN.fullmatch(entry):
                raise ValueError(f"{entry!r}: expected 'owner/name', 'owner' or '*'")
        return entries

    @field_validator("s3_allow")
    @classmethod
    def _check_s3_allow(cls, value: list[str]) -> list[str]:
        entries = []
        for entry in value:
            text = entry.strip().removeprefix(SCHEME)
            try:
                ref = S3Ref.parse(SCHEME + text)
            except AdapterError as exc:
                raise ValueError(f"{entry!r}: {exc.message}") from None
            entries.append(f"{ref.bucket}/{ref.prefix}" if ref.prefix else ref.bucket)
        return entries

    @field_validator("watch")
    @classmethod
    def _check_watch(cls, value: list[str]) -> list[str]:
        ids = [parse_source(entry).id for entry in value]  # ValueError: neither kind
        if len(set(ids)) != len(ids):
            raise ValueError("a source is given twice")
        return value

    @model_validator(mode="after")
    def _watch_outside_store(self) -> Self:
        """A watched dir may not hold the store nor lie in it: the store's staging dirs
        would look like adapters (``tmp/stage-*`` as name ``tmp``)."""
        store = getattr(self, "store_dir", None)  # Settings has it; this mixin alone not
        if not isinstance(store, Path):
            return self
        store = store.resolve()
        for entry in self.watch:
            source = parse_source(entry)
            if isinstance(source, DirSource):
                root = source.root.resolve()
                if root.is_relative_to(store) or store.is_relative_to(root):
                    raise ValueError(f"--watch {entry}: the adapter store ({store}) must "
                                     "not be inside it, nor it inside the store")
        return self
