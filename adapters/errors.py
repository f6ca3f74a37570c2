"""Typed errors of the adapter registry.

Every error carries a stable machine ``code`` (part of the public API: clients and
tests match on it, so never rename one) and a human message saying what failed and,
where it helps, what to do. The HTTP layer maps classes to statuses in one table;
nothing here knows about HTTP.

Hierarchy, so the table can map whole families at once::

    AdapterError
    ├── InvalidName               bad adapter name or tag
    ├── AdapterNotFound           no such name / name:tag
    ├── VersionNotFound           no such content digest
    ├── SourceNotFound            import source missing
    ├── PathNotAllowed            import path outside every allowed root
    ├── AdmissionUnavailable      base model facts unknown: nothing can be admitted
    ├── UploadIncomplete          the upload body stalled past the idle timeout
    ├── TooManyUploads            every upload slot taken (retry later)
    ├── StoreFull                 the store's byte budget would be exceeded
    │   └── DiskFull              the store's filesystem is out of space or quota
    ├── StoreBusy                 store lock not acquired in time
    ├── NameTaken                 a watched adapter's name:tag is held by another adapter
    ├── StoreCorrupt              on-disk state the store did not write
    ├── HubError                  pulling from a Hugging Face Hub endpoint failed
    │   ├── InvalidHubRepo, HubRepoNotAllowed, HubRepoNotFound,
    │   └── HubAccessDenied, HubUnavailable
    ├── S3Error                   pulling from S3-compatible object storage failed
    │   ├── InvalidS3Url, S3NotAllowed, S3NotFound,
    │   └── S3AccessDenied, S3Unavailable, S3ObjectChanged
    └── AdmissionError            the adapter was refused; nothing was stored
        ├── InvalidArchive, UnsafePath, TooLarge          (how it arrived)
        │   └── InvalidMemberName   (an InvalidArchive)
        ├── InvalidAdapterConfig, UnsupportedPeftType,
        │   UnsupportedFeature                            (adapter_config.json)
        ├── PickleRefused, MissingWeights, CorruptWeights (files)
        ├── InvalidTaskDefaults                           (hotswap.json)
        └── RankTooHigh, UnknownTargetModule, UnsupportedTargetModule,
            BaseModelMismatch, MalformedWeights, UnexpectedTensor,
            BadDtype, NonFiniteWeights                    (tensors vs base model)
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from typing import ClassVar


class AdapterError(Exception):
    """Base of every registry error. ``code`` is stable; ``message`` is for humans."""

    code: ClassVar[str] = "adapter_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: The request field at fault, when the caller named one (OpenAI's ``param``).
        self.param = param

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidName(AdapterError):
    code = "invalid_name"


class AdapterNotFound(AdapterError):
    code = "adapter_not_found"


class VersionNotFound(AdapterError):
    code = "version_not_found"


class SourceNotFound(AdapterError):
    """The local directory (or hub repo/revision) to import from does not exist."""

    code = "source_not_found"


class PathNotAllowed(AdapterError):
    """A server-side path to import from is not absolute, or not under an allowed root."""

    code = "path_not_allowed"


class AdmissionUnavailable(AdapterError):
    """The served base model's config could not be read, so no adapter can be checked."""

    code = "admission_unavailable"


class UploadIncomplete(AdapterError):
    """The upload body stopped arriving (idle past the timeout); nothing was stored."""

    code = "upload_incomplete"


class TooManyUploads(AdapterError):
    """Every upload slot is taken; retry later."""

    code = "too_many_uploads"


class StoreFull(AdapterError):
    """Storing this version would take the store past its byte budget."""

    code = "store_full"


class DiskFull(StoreFull):
    """The store's filesystem ran out of space (ENOSPC) or of the user's quota (EDQUOT)
    while an adapter arrived or was written. Nothing was stored; freeing space and
    retrying works. A :class:`StoreFull`, so whatever handles the budget handles this."""

    code = "insufficient_storage"


#: What the kernel says when a write finds no room: out of blocks or inodes, over quota.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


@contextlib.contextmanager
def disk_full_errors(doing: str) -> Iterator[None]:
    """Raise :class:`DiskFull` for an ENOSPC / EDQUOT in the block; other OSErrors
    pass unchanged (a bug or a broken disk, not a condition the client can act on).
    ``doing`` ("receiving the upload", ...) names the step for the message, which
    clients see: it never names a server path."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_FULL_ERRNOS:
            raise
        reason = "out of space" if exc.errno == errno.ENOSPC else "over its quota"
        raise DiskFull(f"the adapter store's disk is {reason}: {doing} failed and left the "
                       "store as it was. Free disk space and retry") from exc


class StoreBusy(AdapterError):
    """Another process held the store lock for longer than the timeout; retry later."""

    code = "store_busy"


class NameTaken(AdapterError):
    """A watched source's adapter would re-point a ``name:tag`` that an upload, an import
    or a hand-made tag holds; the watcher leaves it (delete the ref to let it in)."""

    code = "name_taken"


class StoreCorrupt(AdapterError):
    """A ref or manifest on disk is unreadable: written by something other than the store."""

    code = "store_corrupt"


class HubError(AdapterError):
    """A hub pull failed before admission. Nothing was stored."""

    code = "hub_error"


class InvalidHubRepo(HubError):
    """Not a Hugging Face repo id (``owner/name``) or not a usable revision."""

    code = "invalid_hub_repo"


class HubRepoNotAllowed(HubError):
    """The repo is not on this server's hub allowlist (``--hub-allow``; empty by default)."""

    code = "hub_repo_not_allowed"


class HubRepoNotFound(HubError):
    """The hub has no such repo or revision (or hides a private repo behind a 404)."""

    code = "hub_repo_not_found"


class HubAccessDenied(HubError):
    """The hub refused access (gated or private repo, missing or bad token)."""

    code = "hub_access_denied"


class HubUnavailable(HubError):
    """The hub could not be reached or a download broke off; retrying may help."""

    code = "hub_unavailable"


class S3Error(AdapterError):
    """A pull from S3-compatible object storage failed before admission. Nothing was
    stored."""

    code = "s3_error"


class InvalidS3Url(S3Error):
    """Not an ``s3://bucket/prefix`` URL (or its prefix can not name an adapter)."""

    code = "invalid_s3_url"


class S3NotAllowed(S3Error):
    """The bucket or prefix is not on this server's allowlist (``--s3-allow``; empty by
    default)."""

    code = "s3_not_allowed"


class S3NotFound(S3Error):
    """No such bucket, or no adapter under the prefix."""

    code = "s3_not_found"


class S3AccessDenied(S3Error):
    """Object storage refused the server's credentials (or it has none)."""

    code = "s3_access_denied"


class S3Unavailable(S3Error):
    """Object storage could not be reached or a download broke off; retrying may help."""

    code = "s3_unavailable"


class S3ObjectChanged(S3Error):
    """An object changed between the listing and its download (someone is writing the
    adapter now); retrying after the writer is done gets one consistent version."""

    code = "s3_object_changed"


class AdmissionError(AdapterError):
    """The adapter failed a check before storage. Nothing was stored."""

    code = "admission_failed"


# --- how the adapter arrived -------------------------------------------------------------


class InvalidArchive(AdmissionError):
    """Not a tar / tar.gz / zip archive, or a damaged, encrypted or hostile one (oversized
    tar extended headers, sparse members)."""

    code = "invalid_archive"


class InvalidMemberName(InvalidArchive):
    """An archive member name the server does not store: not UTF-8, control characters, a
    component over 255 bytes, or a path too long or too deep."""

    code = "invalid_member_name"


class UnsafePath(AdmissionError):
    """An archive member or source entry that could escape the staging dir or is not a plain
    file: absolute path, ``..``, symlink, hard link, device, fifo."""

    code = "unsafe_path"


class TooLarge(AdmissionError):
    """Byte or file-count cap exceeded (upload size, extracted size, number of files)."""

    code = "adapter_too_large"


# --- adapter_config.json -----------------------------------------------------------------


class InvalidAdapterConfig(AdmissionError):
    """``adapter_config.json`` missing, not JSON, or a required field missing or mistyped."""

    code = "invalid_adapter_config"


class UnsupportedPeftType(AdmissionError):
    code = "unsupported_peft_type"


class UnsupportedFeature(AdmissionError):
    """A PEFT option the engine would ignore or compute wrongly (DoRA, modules_to_save,
    rank_pattern, bias, ...). Refused rather than served with silently wrong outputs."""

    code = "unsupported_feature"


# --- files -------------------------------------------------------------------------------


class PickleRefused(AdmissionError):
    """A pickle-format file (.bin, .pt, .pth, .pkl, .ckpt) is present. It is never opened."""

    code = "pickle_refused"


class MissingWeights(AdmissionError):
    """No ``adapter_model.safetensors``, or it holds no adapter tensors."""

    code = "missing_weights"


class CorruptWeights(AdmissionError):
    """``adapter_model.safetensors`` is truncated or its header is malformed."""

    code = "corrupt_weights"


# --- hotswap.json ------------------------------------------------------------------------


class InvalidTaskDefaults(AdmissionError):
    """``hotswap.json`` (the version's task defaults) is over its size cap, not a JSON
    object, has an unknown field, a value of the wrong type or range, or a
    ``response_format`` whose schema is not a valid JSON schema."""

    code = "invalid_task_defaults"


# --- tensors against the base model ------------------------------------------------------


class RankTooHigh(AdmissionError):
    code = "rank_too_high"


class UnknownTargetModule(AdmissionError):
    """A target module the base model does not have (e.g. ``c_attn`` on a Llama)."""

    code = "unknown_target_module"


class UnsupportedTargetModule(AdmissionError):
    """A module the base model has but adapters may not target here (``lm_head``,
    ``embed_tokens``)."""

    code = "unsupported_target_module"


class BaseModelMismatch(AdmissionError):
    """Tensor shapes say the adapter was trained for another base model (other hidden size,
    head layout, layer count)."""

    code = "base_model_mismatch"


class MalformedWeights(AdmissionError):
    """Tensors inconsistent among themselves: lora_A without lora_B, ranks that disagree,
    wrong number of dimensions."""

    code = "malformed_weights"


class UnexpectedTensor(AdmissionError):
    """A tensor name that is not an adapter weight of a supported module."""

    code = "unexpected_tensor"


class BadDtype(AdmissionError):
    code = "bad_dtype"


class NonFiniteWeights(AdmissionError):
    code = "non_finite_weights"
