"""Extract an uploaded archive (tar, tar.gz, zip) into a staging directory, safely.

The upload is read as a stream and never held in memory whole: tar and tar.gz are
extracted member by member as bytes arrive; zip keeps its index at the end, so it is
spooled to an anonymous temporary file next to the staging directory (inside the store)
first. Every read and write is counted against the caps, so neither a large upload nor
a decompression bomb gets further than ``limits.max_total_bytes``.

The stdlib readers never see what would make them stall or balloon: tar header blocks
are checked as they stream past (:mod:`.tar_guard`; tar.gz is decompressed here, so the
check sees the tar), and a zip's central directory is sized (:mod:`.zip_guard`) before
``zipfile`` reads it.

Nothing is extracted with ``tarfile.extract``/``zipfile.extract``: each member's name is
checked (:mod:`.members`: no absolute paths, no ``..``, nothing the server could not
create or walk), only regular files and directories are accepted (links, devices, fifos
are refused, not skipped, so the uploader learns why), and files are created with
``O_EXCL | O_NOFOLLOW`` below the staging directory. Permissions and owners in the
archive are ignored.
"""

from __future__ import annotations

import gzip
import logging
import os
import stat
import tarfile
import tempfile
import uuid
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from ..admission import AdmissionLimits
from ..errors import InvalidArchive, InvalidMemberName, TooLarge, UnsafePath
from . import CHUNK
from .members import member_path
from .streams import CappedInput, Readable
from .tar_guard import ENCODING, ERRORS, TarHeaderGuard
from .zip_guard import check_central_directory

logger = logging.getLogger(__name__)


_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # local file header; empty archive
_TAR_MAGIC_AT, _TAR_MAGIC = 257, b"ustar"
_HEAD_BYTES = 512


def extract_archive(stream: Readable, dest: Path, limits: AdmissionLimits) -> None:
    """Extract the archive read from ``stream`` into the existing, empty dir ``dest``.

    The format is detected from the first bytes, not from a file name. If the archive
    holds a single top-level directory (``tar czf a.tgz my-adapter/``), its contents are
    moved up so ``dest`` holds the adapter files directly.

    Raises :class:`InvalidArchive`, :class:`UnsafePath` or :class:`TooLarge`; ``dest``
    may then hold a partial extraction, which the caller discards (``Store.staging``
    does).
    """
    src = CappedInput(stream, limits.max_total_bytes)
    head = src.peek(_HEAD_BYTES)
    if head.startswith(_GZIP_MAGIC):
        # Decompressed here rather than by tarfile ("r|gz"), so the guard sees the tar.
        with gzip.GzipFile(fileobj=src, mode="rb") as tar_stream:
            _extract_tar(tar_stream, dest, limits)
    elif head.startswith(_ZIP_MAGICS):
        _extract_zip(src, dest, limits)
    elif head[_TAR_MAGIC_AT : _TAR_MAGIC_AT + len(_TAR_MAGIC)] == _TAR_MAGIC:
        _extract_tar(src, dest, limits)
    else:
        raise InvalidArchive("upload is not a tar, tar.gz or zip archive")
    _hoist_single_dir(dest)


class _Writer:
    """Creates checked members below ``dest``, counting entries and bytes."""

    def __init__(self, dest: Path, limits: AdmissionLimits) -> None:
        self._dest = dest
        self._limits = limits
        self._entries = 0
        self._budget = limits.max_total_bytes

    def path_of(self, name: str, *, is_dir: bool) -> PurePosixPath | None:
        """Check a member name; None for the archive root (``./``)."""
        self._entries += 1
        if self._entries > self._limits.max_files:
            raise TooLarge(f"archive has more than {self._limits.max_files} entries")
        rel = member_path(name)
        if rel is None and not is_dir:
            # Never written, so its data would be skipped uncounted by the byte budget.
            raise InvalidMemberName(f"member {name!r}: a file named as the archive root")
        return rel

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
# permissions) is ours and propagates unchanged. UnicodeError: zipfile decodes flagged
# UTF-8 names strictly; tarfile a pax hdrcharset record.
_TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, NotImplementedError)


def _extract_tar(src: Readable, dest: Path, limits: AdmissionLimits) -> None:
    writer = _Writer(dest, limits)
    guarded = TarHeaderGuard(src, max_member_bytes=limits.max_total_bytes)
    try:
        # Stream mode ("r|"): headers are read in order, no seeking, nothing buffered.
        with tarfile.open(fileobj=guarded, mode="r|", encoding=ENCODING, errors=ERRORS) as tar:
            for member in tar:
                if not (member.isreg() or member.isdir()):
                    raise UnsafePath(
                        f"member {member.name!r}: links, devices and fifos are refused"
                    )
                rel = writer.path_of(member.name, is_dir=member.isdir())
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
    except UnicodeError as exc:
        raise InvalidMemberName(f"tar member name is not valid UTF-8: {exc}") from exc


def _extract_zip(src: CappedInput, dest: Path, limits: AdmissionLimits) -> None:
    writer = _Writer(dest, limits)
    # Anonymous file (unlinked at once): nothing to clean up after a crash.
    with tempfile.TemporaryFile(dir=dest.parent) as spool:
        while chunk := src.read(CHUNK):
            spool.write(chunk)
        size = spool.tell()
        check_central_directory(spool, limits.max_files)
        spool.seek(0)
        try:
            with zipfile.ZipFile(spool) as archive:
                for info in archive.infolist():
                    if info.flag_bits & 0x1:
                        raise InvalidArchive(f"member {info.filename!r} is encrypted")
                    # zipfile would seek there and fail with a bare OSError (EINVAL).
                    if not 0 <= info.header_offset < size:
                        raise InvalidArchive(f"member {info.filename!r}: offset out of the file")
                    # Unix mode bits live in the high half; 0 means "not recorded".
                    kind = stat.S_IFMT(info.external_attr >> 16)
                    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                        raise UnsafePath(
                            f"member {info.filename!r}: links, devices and fifos are refused"
                        )
                    is_dir = info.filename.endswith("/")  # is_dir() fails on an empty name
                    rel = writer.path_of(info.filename, is_dir=is_dir)
                    if rel is None:
                        continue
                    if is_dir:
                        writer.mkdir(rel)
                        continue
                    with archive.open(info) as data:
                        writer.write(rel, data)
        except _ZIP_ERRORS as exc:
            raise InvalidArchive(f"damaged zip archive: {exc}") from exc
        except UnicodeError as exc:
            raise InvalidMemberName(f"zip member name is not valid UTF-8: {exc}") from exc


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
