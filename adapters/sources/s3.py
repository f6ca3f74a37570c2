"""Pull an adapter from S3-compatible object storage (AWS S3, MinIO, SeaweedFS, GCS's and
R2's S3 APIs) with boto3.

``s3://bucket/prefix`` names a "directory": the objects directly under ``prefix/``. Its
listing decides what to fetch before a byte of weights moves (:mod:`.selection`: the
config, the safetensors weights and ``hotswap.json``, nothing else; pickle-only prefixes
and oversized files refused from the listing). Each object is then read with
``If-Match`` on the ETag the listing showed, so an adapter rewritten mid-pull is refused
(:class:`S3ObjectChanged`) instead of stored as a mix of two uploads, and the bytes
received are checked against the listed size. The version's recorded source is
``s3://bucket/prefix@<ETag of the weights>``.

Endpoint, region and credentials come from boto3's standard chain, nothing of our own:
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE`` and config files, web identity
(``AWS_ROLE_ARN`` + ``AWS_WEB_IDENTITY_TOKEN_FILE``: Kubernetes service accounts), instance
metadata. Credentials never reach our logs: botocore's own loggers are held at WARNING,
since at DEBUG they print signed request headers.

Which buckets may be read at all is the server's policy (:class:`S3Policy`, empty by
default), checked before any network traffic.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import boto3
import urllib3.exceptions
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)

from ..admission import WEIGHTS_FILE, AdmissionLimits
from ..errors import (
    InvalidS3Url,
    S3AccessDenied,
    S3NotAllowed,
    S3NotFound,
    S3ObjectChanged,
    S3Unavailable,
)
from ..manifest import is_source
from ..names import HUB_NAME_SEPARATOR, NAME_PATTERN
from . import CHUNK
from .hub import PROGRESS_INTERVAL_S, ProgressFn
from .selection import select

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)
for _name in ("botocore", "boto3", "s3transfer", "urllib3"):
    logging.getLogger(_name).setLevel(logging.WARNING)

SCHEME = "s3://"
#: S3's bucket rules (3-63 of a-z 0-9 . -, starting and ending alphanumeric).
BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
#: One key component: no control characters or whitespace, no '@' (it separates the
#: recorded version, which names the prefix without either).
_PART_PATTERN = re.compile(r"^[^\x00-\x1f\x7f@/\\\s]{1,255}$")
#: Longest prefix accepted (S3 keys are at most 1024 bytes; the file names follow).
MAX_PREFIX_BYTES = 900
#: Objects one listing level may hold: an adapter dir has a handful.
MAX_LEVEL_OBJECTS = 1000
#: Attempts per object download (boto3 retries requests, not a body cut midway).
DOWNLOAD_ATTEMPTS = 2

_LOCAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
_DENIED = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                     "AllAccessDisabled", "InvalidToken", "ExpiredToken", "403", "401"})
_MISSING = frozenset({"NoSuchBucket", "NoSuchKey", "404"})


@dataclass(frozen=True)
class S3Ref:
    """``s3://bucket/prefix``: the objects directly under ``prefix/``."""

    bucket: str
    prefix: str = ""  # no leading or trailing '/'; "" is the bucket's top level

    @classmethod
    def parse(cls, text: str) -> S3Ref:
        if not text.startswith(SCHEME):
            raise InvalidS3Url(f"{text!r} is not an s3:// URL (s3://bucket/prefix)")
        bucket, _, prefix = text[len(SCHEME):].partition("/")
        if not BUCKET_PATTERN.fullmatch(bucket) or ".." in bucket:
            raise InvalidS3Url(f"{bucket!r} is not an S3 bucket name (3-63 of a-z 0-9 . -)")
        prefix = prefix.strip("/")
        if len(prefix.encode()) > MAX_PREFIX_BYTES:
            raise InvalidS3Url(f"the prefix is longer than {MAX_PREFIX_BYTES} bytes")
        if prefix:
            for part in prefix.split("/"):
                if not _PART_PATTERN.fullmatch(part) or part in (".", ".."):
                    raise InvalidS3Url(f"{text!r}: {part!r} is not a usable key component "
                                       "(empty, '.', '..', '@', whitespace or a control "
                                       "character)")
        return cls(bucket, prefix)

    @property
    def default_name(self) -> str:
        """The adapter name a pull stores under unless told otherwise: the prefix's last
        component, lower-cased."""
        name = self.prefix.rpartition("/")[2].lower()
        if not NAME_PATTERN.fullmatch(name) or HUB_NAME_SEPARATOR in name:
            raise InvalidS3Url(f"{self} does not end in a usable adapter name; pass a name")
        return name

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def child(self, *parts: str) -> S3Ref:
        return S3Ref(self.bucket, "/".join(p for p in (self.prefix, *parts) if p))

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class S3Policy:
    """Where pulls may read: ``bucket`` (all of it) or ``bucket/prefix`` (that prefix and
    below, by whole components: ``b/team`` allows ``b/team/x``, not ``b/team2``)."""

    allow: tuple[str, ...] = ()

    def permits(self, ref: S3Ref) -> bool:
        for entry in self.allow:
            bucket, _, prefix = entry.partition("/")
            prefix = prefix.strip("/")
            if bucket == ref.bucket and (not prefix or ref.prefix == prefix
                                         or ref.prefix.startswith(prefix + "/")):
                return True
        return False

    def check(self, ref: S3Ref) -> None:
        if not self.permits(ref):
            hint = ("no buckets are allowed on this server (--s3-allow)" if not self.allow
                    else "allowed: " + ", ".join(self.allow))
            raise S3NotAllowed(f"{ref} is not allowed; {hint}")


@dataclass(frozen=True)
class S3Object:
    key: str
    size: int
    etag: str  # as S3 sends it, quoted

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name


#: The environment a client was made from: a change (a rotated key, another endpoint in
#: a test) makes a new one.
_CLIENT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_PROFILE",
               "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ROLE_ARN")
_client_lock = threading.Lock()
_clients: dict[tuple[str | None, ...], S3Client] = {}


def client() -> S3Client:
    """An S3 client for the process's AWS environment (clients are thread-safe; sessions
    are not, so each is made here, under a lock). Endpoint, region and credentials: the
    standard AWS chain."""
    key = tuple(os.environ.get(var) for var in _CLIENT_ENV)
    with _client_lock:
        if key not in _clients:
            session = boto3.session.Session()
            _clients[key] = session.client("s3", config=Config(
                retries={"mode": "standard", "max_attempts": 3},
                connect_timeout=5, read_timeout=60,
                # Checksums only where S3 requires them: boto3 >= 1.36 adds CRC headers
                # to every request by default, which some S3-compatible servers refuse.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ))
        return _clients[key]


def list_level(s3: S3Client, ref: S3Ref) -> dict[str, S3Object]:
    """The objects directly under ``ref`` (file name -> object); sub-prefixes left out."""
    out: dict[str, S3Object] = {}
    prefix = f"{ref.prefix}/" if ref.prefix else ""
    with s3_errors(str(ref)):
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=ref.bucket, Prefix=prefix, Delimiter="/")
        seen = 0
        for page in pages:
            # Sub-prefixes count too: a prefix with a million of them is no adapter dir,
            # and paging through it would be a million list calls for one request.
            seen += len(page.get("Contents", [])) + len(page.get("CommonPrefixes", []))
            for item in page.get("Contents", []):
                if item["Key"].endswith("/"):
                    continue  # a "directory" key some servers list (SeaweedFS)
                obj = S3Object(item["Key"], item["Size"], item.get("ETag", ""))
                out[obj.name] = obj
            if seen > MAX_LEVEL_OBJECTS:
                raise S3NotFound(f"{ref} holds more than {MAX_LEVEL_OBJECTS} objects and "
                                 "prefixes at its top level: not an adapter directory")
    return out


def list_tree(s3: S3Client, ref: S3Ref, max_objects: int) -> list[S3Object]:
    """Every object below ``ref`` (for watching), at most ``max_objects`` of them."""
    out: list[S3Object] = []
    prefix = f"{ref.prefix}/" if ref.prefix else ""
    with s3_errors(str(ref)):
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=ref.bucket, Prefix=prefix)
        for page in pages:
            out += [S3Object(i["Key"], i["Size"], i.get("ETag", ""))
                    for i in page.get("Contents", []) if not i["Key"].endswith("/")]
            if len(out) > max_objects:
                raise S3Unavailable(f"{ref} holds more than {max_objects} objects; watch a "
                                    "narrower prefix")
    return out


def download(s3: S3Client, ref: S3Ref, dest: Path, limits: AdmissionLimits, *,
             on_progress: ProgressFn | None = None) -> str:
    """Fetch the adapter files under ``ref`` into the empty dir ``dest``; return the
    version's source (``s3://bucket/prefix@etag``). On any error ``dest`` may hold
    partial files: the caller's staging dir is discarded anyway."""
    level = list_level(s3, ref)
    if not level:
        raise S3NotFound(f"no objects under {ref} (or no such bucket)")
    return fetch(s3, ref, level, dest, limits, on_progress=on_progress)


def fetch(s3: S3Client, ref: S3Ref, level: dict[str, S3Object], dest: Path,
          limits: AdmissionLimits, *, on_progress: ProgressFn | None = None) -> str:
    """:func:`download` from a listing already made (a watcher's)."""
    names = select({name: obj.size for name, obj in level.items()}, str(ref), limits)
    wanted = [level[name] for name in names]
    if not all(o.etag for o in wanted):
        raise S3Unavailable(f"object storage sent no ETag for the files under {ref}: the "
                            "download can not be pinned to what was listed")
    source = f"{ref}@{level[WEIGHTS_FILE].etag.strip(chr(34))}"
    if not is_source(source):  # before a byte moves, not after the download
        raise InvalidS3Url(f"{ref}: its weights' ETag can not be recorded as a version")
    progress = _Progress(sum(o.size for o in wanted), on_progress)
    logger.info("pulling %s: %d files, %d bytes", ref, len(wanted), progress.total)
    for obj in wanted:
        _fetch_object(s3, ref, obj, dest / obj.name, progress)
    progress.finish()
    return source


def _fetch_object(s3: S3Client, ref: S3Ref, obj: S3Object, path: Path,
                  progress: _Progress) -> None:
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        start = progress.done
        try:
            with s3_errors(f"s3://{ref.bucket}/{obj.key}"):
                resp = s3.get_object(Bucket=ref.bucket, Key=obj.key, IfMatch=obj.etag)
                with path.open("wb") as out:
                    received = 0
                    for chunk in resp["Body"].iter_chunks(CHUNK):
                        received += len(chunk)
                        if received > obj.size:
                            raise S3ObjectChanged(f"s3://{ref.bucket}/{obj.key} is larger "
                                                  f"than its listed {obj.size} bytes")
                        out.write(chunk)
                        progress.add(len(chunk))
            if received != obj.size:
                raise S3Unavailable(f"download of s3://{ref.bucket}/{obj.key} is incomplete "
                                    f"({received} of {obj.size} bytes)")
            return
        except S3Unavailable as exc:
            if attempt == DOWNLOAD_ATTEMPTS:
                raise
            logger.warning("%s; retrying", exc.message)
            progress.done = start


class _Progress:
    """Bytes received so far, reported at most every PROGRESS_INTERVAL_S."""

    def __init__(self, total: int, report: ProgressFn | None) -> None:
        self.total = total
        self.done = 0
        self._report = report
        self._last = 0.0

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self._report is not None and now - self._last >= PROGRESS_INTERVAL_S:
            self._last = now
            self._report(min(self.done, self.total), self.total)

    def finish(self) -> None:
        if self._report is not None:
            self._report(self.total, self.total)


@contextlib.contextmanager
def s3_errors(where: str) -> Iterator[None]:
    """Map boto3 and transport errors to :class:`S3Error` subclasses (``where``: the
    bucket, prefix or object, for the message; never credentials)."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _MISSING or status == 404:
            raise S3NotFound(f"{where}: {code or 'not found'}") from exc
        if code in _DENIED or status in (401, 403):
            raise S3AccessDenied(f"object storage refused access to {where} ({code}); "
                                 "check the server's AWS credentials") from exc
        if code == "PreconditionFailed" or status == 412:
            raise S3ObjectChanged(f"{where} changed since it was listed (being written "
                                  "now?); retry") from exc
        raise S3Unavailable(f"object storage error for {where}: {code} "
                            f"(HTTP {status})") from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise S3AccessDenied(f"no usable AWS credentials for {where} (the server reads "
                             "the standard AWS chain: env, profile, web identity)") from exc
    except ParamValidationError as exc:
        raise InvalidS3Url(f"{where}: {_first_line(exc)}") from exc
    except (BotoCoreError, urllib3.exceptions.HTTPError) as exc:
        raise S3Unavailable(f"reaching object storage for {where} failed: "
                            f"{type(exc).__name__}") from exc
    except OSError as exc:
        if exc.errno in _LOCAL_ERRNOS:
            raise  # this server's disk: the caller maps a full one to DiskFull (507)
        raise S3Unavailable(f"reading {where} failed: {type(exc).__name__}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no details"
