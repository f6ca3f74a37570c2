"""Extract an uploaded archive (tar, tar.gz, zip) into a staging directory, safely.

The upload is read as a stream and never held in memory whole: tar and tar.gz are
extracted member by member as bytes arrive; zip keeps its index at the end, so it is
spooled to an anonymous temporary file next to the staging directory (inside the store)
first. Every read and write is counted against the caps, so neither a large upload nor
a decompression bomb gets further than ``limits.max_total_bytes``.

Nothing is extracted with ``tarfile.extract``/``zipfile.extract``: each member's path
is checked here (no absolute paths, no ``..``, no backslashes or drive letters), only
regular files and directories are accepted (links, devices, fifos are refused, not
skipped, so the uploader learns why), and files are created with ``O_EXCL | O_NOFOLLOW``
below the staging directory. Permissions and owners in the archive are ignored.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import re
import stat
import tarfile
import tempfile
import uuid
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal, Protocol

from ..admission import AdmissionLimits
from ..errors import InvalidArchive, TooLarge, UnsafePath
from . import CHUNK

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

logger = logging.getLogger(__name__)


_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # local file header; empty archive
_TAR_MAGIC_AT, _TAR_MAGIC = 257, b"ustar"
_HEAD_BYTES = 512
_DRIVE = re.compile(r"^[A-Za-z]:")


class Readable(Protocol):
    """Anything with ``read(n)``: a file, ``UploadFile.file``, a socket reader."""

    def read(self, size: int = -1, /) -> bytes: ...


def extract_archive(stream: Readable, dest: Path, limits: AdmissionLimits) -> None:
    """Extract the archive read from ``stream`` into the existing, empty dir ``dest``.

    The format is detected from the first bytes, not from a file name. If the archive
    holds a single top-level directory (``tar czf a.tgz my-adapter/``), its contents are
    moved up so ``dest`` holds the adapter files directly.

    Raises :class:`InvalidArchive`, :class:`UnsafePath` or :class:`TooLarge`; ``dest``
    may then hold a partial extraction, which the caller discards (``Store.staging``
    does).
    """
    src = _CappedInput(stream, limits.max_total_bytes)
    head = src.peek(_HEAD_BYTES)
    if head.startswith(_GZIP_MAGIC):
        _extract_tar(src, dest, limits, "r|gz")
    elif head.startswith(_ZIP_MAGICS):
        _extract_zip(src, dest, limits)
    elif head[_TAR_MAGIC_AT : _TAR_MAGIC_AT + len(_TAR_MAGIC)] == _TAR_MAGIC:
        _extract_tar(src, dest, limits, "r|")
    else:
        raise InvalidArchive("upload is not a tar, tar.gz or zip archive")
    _hoist_single_dir(dest)


class _CappedInput(io.RawIOBase):
    """The upload stream as a read-only binary file, counted against a byte cap, with a
    peekable head (for format detection without consuming it)."""

    def __init__(self, stream: Readable, cap: int) -> None:
        super().__init__()
        self._stream = stream
        self._cap = cap
        self._count = 0
        self._head = b""

    def readable(self) -> bool:
        return True

    def peek(self, size: int) -> bytes:
        while len(self._head) < size:
            chunk = self._pull(size - len(self._head))
            if not chunk:
                break
            self._head += chunk
        return self._head

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            data, self._head = self._head[: len(view)], self._head[len(view) :]
        else:
            data = self._pull(len(view))
        view[: len(data)] = data
        return len(data)

    def _pull(self, size: int) -> bytes:
        data = self._stream.read(size)
        self._count += len(data)
        if self._count > self._cap:
            raise TooLarge(f"upload exceeds {self._cap} bytes")
        return data


class _Writer:
    """Creates checked members below ``dest``, counting entries and bytes."""

    def __init__(self, dest: Path, limits: AdmissionLimits) -> None:
        self._dest = dest
        self._limits = limits
        self._entries = 0
        self._budget = limits.max_total_bytes

    def path_of(self, name: str) -> PurePosixPath | None:
        """Check a member name; None for the archive root (``./``)."""
        self._entries += 1
        if self._entries > self._limits.max_files:
            raise TooLarge(f"archive has more than {self._limits.max_files} entries")
        if not name or "\x00" in name or "\\" in name:
            raise UnsafePath(f"member {name!r}: empty name, NUL or backslash")
        if name.startswith("/") or _DRIVE.match(name):
            raise UnsafePath(f"member {name!r}: absolute path")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise UnsafePath(f"member {name!r}: '..' would leave the staging directory")
        return PurePosixPath(*parts) if parts else None

    def mkdir(self, rel: PurePosixPath) -> None:
        path = self._dest
        for part in rel.parts:
            path = path / part
            try:
                os.mkdir(path, 0o755)
            except FileExistsError:
                # We never create links, but check anyway rather than trust it.
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    raise InvalidArchive(f"member {rel}: {part} is both a file and a dir") from None
            except OSError as exc:
                raise InvalidArchive(f"member {rel}: cannot create: {exc.strerror}") from exc

    def write(self, rel: PurePosixPath, data: Readable) -> None:
        if rel.parent.parts:
            self.mkdir(rel.parent)
        try:
            fd = os.open(
                self._dest / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644
            )
        except FileExistsError:
            raise InvalidArchive(f"member {rel} appears twice") from None
        except OSError as exc:
            raise InvalidArchive(f"member {rel}: cannot create: {exc.strerror}") from exc
        with os.fdopen(fd, "wb") as out:
            while chunk := data.read(CHUNK):
                self._budget -= len(chunk)
                if self._budget < 0:
                    raise TooLarge(f"extracted files exceed {self._limits.max_total_bytes} bytes")
                out.write(chunk)


# Errors a damaged archive raises from the stdlib readers; anything else (disk full,
# permissions) is ours and propagates unchanged.
_TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, NotImplementedError)


def _extract_tar(
    src: _CappedInput, dest: Path, limits: AdmissionLimits, mode: Literal["r|gz", "r|"]
) -> None:
    writer = _Writer(dest, limits)
    try:
        # Stream mode ("r|"): headers are read in order, no seeking, nothing buffered.
        with tarfile.open(fileobj=src, mode=mode) as tar:
            for member in tar:
                if not (member.isreg() or member.isdir()):
                    raise UnsafePath(
                        f"member {member.name!r}: links, devices and fifos are refused"
                    )
                rel = writer.path_of(member.name)
                if rel is None:
                    continue
                if member.isdir():
                    writer.mkdir(rel)
                    continue
                data = tar.extractfile(member)
                if data is None:  # pragma: no cover - isreg() members always have data
                    raise InvalidArchive(f"member {member.name!r} has no data")
                writer.write(rel, data)
    except _TAR_ERRORS as exc:
        raise InvalidArchive(f"damaged tar archive: {exc}") from exc


def _extract_zip(src: _CappedInput, dest: Path, limits: AdmissionLimits) -> None:
    writer = _Writer(dest, limits)
    # Anonymous file (unlinked at once): nothing to clean up after a crash.
    with tempfile.TemporaryFile(dir=dest.parent) as spool:
        while chunk := src.read(CHUNK):
            spool.write(chunk)
        spool.seek(0)
        try:
            with zipfile.ZipFile(spool) as archive:
                for info in archive.infolist():
                    if info.flag_bits & 0x1:
                        raise InvalidArchive(f"member {info.filename!r} is encrypted")
                    # Unix mode bits live in the high half; 0 means "not recorded".
                    kind = stat.S_IFMT(info.external_attr >> 16)
                    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                        raise UnsafePath(
                            f"member {info.filename!r}: links, devices and fifos are refused"
                        )
                    rel = writer.path_of(info.filename)
                    if rel is None:
                        continue
                    if info.is_dir():
                        writer.mkdir(rel)
                        continue
                    with archive.open(info) as data:
                        writer.write(rel, data)
        except _ZIP_ERRORS as exc:
            raise InvalidArchive(f"damaged zip archive: {exc}") from exc


def _hoist_single_dir(dest: Path) -> None:
    entries = os.listdir(dest)
    if len(entries) != 1 or not stat.S_ISDIR(os.lstat(dest / entries[0]).st_mode):
        return
    # Rename first: a child may carry the same name as the directory being hoisted.
    inner = dest / f".hoist-{uuid.uuid4().hex}"
    os.rename(dest / entries[0], inner)
    for child in os.listdir(inner):
        os.rename(inner / child, dest / child)
    os.rmdir(inner)
