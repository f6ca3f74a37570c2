"""The manifest of a stored adapter version, and the definition of its content digest.

A version directory is named by :func:`content_digest` of its adapter files, nothing
else: the same files uploaded twice, or under two names, are one version. Because the
manifest holds per-file hashes, anyone can re-check a version with standard tools::

    cd versions/<digest>/adapter && sha256sum $(ls | LC_ALL=C sort) | sha256sum

(the digest is the sha256 of ``sha256sum``-style lines, sorted by path).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .defaults import TaskDefaults

DIGEST_PATTERN = re.compile(r"^[0-9a-f]{64}$")

#: ``upload`` | ``path:<absolute path>`` | ``hub:<repo>@<revision>``
SOURCE_PATTERN = re.compile(r"^(upload|path:/.*|hub:[^@\s]+@[^@\s]+|s3://[^@\s]+@[^@\s]+)$")

MANIFEST_SCHEMA_VERSION = 1


def is_digest(value: str) -> bool:
    return DIGEST_PATTERN.fullmatch(value) is not None


def is_source(value: str) -> bool:
    return SOURCE_PATTERN.fullmatch(value) is not None


class FileEntry(BaseModel):
    """One adapter file: path relative to the adapter dir (POSIX separators)."""

    model_config = ConfigDict(frozen=True)

    path: str
    sha256: str = Field(pattern=DIGEST_PATTERN.pattern)
    size: int = Field(ge=0)


def content_digest(files: Iterable[FileEntry]) -> str:
    """sha256 over ``"<file sha256>  <path>\\n"`` lines sorted by path (byte order)."""
    lines = sorted((f.path, f.sha256) for f in files)
    h = hashlib.sha256()
    for path, sha in lines:
        h.update(f"{sha}  {path}\n".encode())
    return h.hexdigest()


class BaseModelRef(BaseModel):
    """The base model an adapter was admitted against."""

    model_config = ConfigDict(frozen=True)

    model_id: str
    #: sha256 of the shape-relevant base config; equal fingerprints => same tensor shapes.
    fingerprint: str


class Manifest(BaseModel):
    """What the store knows about one immutable version. Written once, never changed.

    ``name`` is the name the content was first admitted under; :meth:`Store.resolve`
    returns a copy carrying the name that was asked for, since identical content under
    two names shares one version.
    """

    # extra="ignore": a newer server sharing the store volume may write more fields.
    model_config = ConfigDict(frozen=True, extra="ignore")

    schema_version: int = MANIFEST_SCHEMA_VERSION
    name: str
    digest: str = Field(pattern=DIGEST_PATTERN.pattern)
    peft_type: str
    #: Largest LoRA rank over all modules; None for prompt-learning types.
    rank: int | None = None
    alpha: float | None = None
    target_modules: tuple[str, ...] = ()
    num_virtual_tokens: int | None = None
    base_model: BaseModelRef
    #: ``base_model_name_or_path`` as declared in adapter_config.json (informational).
    declared_base_model: str | None = None
    files: tuple[FileEntry, ...]
    size_bytes: int = Field(ge=0)
    created_at: datetime
    source: str = Field(pattern=SOURCE_PATTERN.pattern)
    #: Non-fatal admission findings (loose base-model name mismatch, dropped files).
    warnings: tuple[str, ...] = ()
    #: The task defaults of ``hotswap.json`` (one of ``files``, so inside the digest);
    #: None without one. Manifests written before defaults existed have none.
    defaults: TaskDefaults | None = None

    @field_validator("defaults", mode="before")
    @classmethod
    def _known_defaults(cls, value: Any) -> Any:
        # Like the manifest itself: fields a newer server's defaults have and this one
        # does not know are left out here, not a corrupt store.
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if k in TaskDefaults.model_fields}
        return value

    @field_validator("created_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        # Several hosts share a store: naive local times would not compare.
        if value.tzinfo is None:
            raise ValueError("created_at must be timezone-aware")
        return value
