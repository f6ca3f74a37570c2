"""Checks on a tar stream's raw 512-byte header blocks, made before ``tarfile`` parses them.

Python 3.11.7's ``tarfile`` reads a pax extended header (typeflag ``x``, ``g``, ``X``) or a
GNU long name / long link (``L``, ``K``) into memory whole, at whatever size its header
claims, and scans pax headers with regexes that are quadratic in their size
(CVE-2024-6232, fixed in 3.11.10): a 64 KiB pax header holds the GIL for 10 s, a 128 MiB
long name costs 250 MiB of RAM. :class:`TarHeaderGuard` sits between the archive's
(decompressed) bytes and ``tarfile`` and refuses such headers as they pass, so ``tarfile``
never reads them.

To know where each header starts, the guard follows the member layout as ``tarfile``'s
stream mode does (``TarInfo._proc_member``), parsing each header block with ``tarfile``'s
own ``TarInfo.frombuf``. What would make ``tarfile`` look for the next header elsewhere is
refused rather than mirrored: pax ``size`` records and GNU sparse members (adapter files
need neither; a pax size is written only for files over 8 GiB).
"""

from __future__ import annotations

import io
import tarfile
from typing import TYPE_CHECKING

from ..errors import InvalidArchive, TooLarge
from .streams import Readable

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

BLOCK = tarfile.BLOCKSIZE
#: One extended header's data. Real ones hold a path (at most 1 KiB is accepted) and a few
#: timestamps; at 4 KiB the quadratic regex costs ~50 ms at worst.
MAX_EXTENDED_BYTES = 4096
#: Extended-header data in a whole archive: caps the regex time at ~0.4 s per upload, while
#: a pax header per member (GNU tar ``--format=posix``) stays well inside it.
MAX_EXTENDED_TOTAL = 32 * 1024
#: Extended headers in a row before a member; ``tarfile`` recurses once per header. Four is
#: the most a real archive has: global header (git archive), pax, long link, long name.
MAX_CHAIN = 4
#: The encoding and error handler the extractor opens ``tarfile`` with, so that the guard
#: parses each header block exactly as ``tarfile`` will.
ENCODING, ERRORS = "utf-8", "surrogateescape"

_PAX = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
_LONG = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
# pax records that move where tarfile expects the next header (a size, or a sparse map it
# reads from the data blocks). Matched as bytes, so any record tarfile would parse is seen.
_LAYOUT_RECORDS = (b" size=", b"GNU.sparse.")


class TarHeaderGuard(io.RawIOBase):
    """``stream`` (an uncompressed tar) as a read-only file that raises
    :class:`InvalidArchive` on a hostile header before returning any byte of it, and
    :class:`TooLarge` on a member over ``max_member_bytes``."""

    def __init__(self, stream: Readable, max_member_bytes: int) -> None:
        super().__init__()
        self._stream = stream
        self._max_member_bytes = max_member_bytes
        self._pos = 0  # stream offset of the next byte read
        self._header_at = 0  # stream offset of the next header block
        self._block = bytearray()  # that header block, as far as it has arrived
        self._pax: bytearray | None = None  # a pax header's data, while it arrives
        self._pax_size = 0
        self._chain = 0  # extended headers since the last member
        self._extended = 0  # extended-header bytes in the archive so far
        self._done = False  # past the end-of-archive block: tarfile reads no more headers

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        data = self._stream.read(len(view))
        if not self._done:
            self._inspect(data)
        view[: len(data)] = data
        return len(data)

    def _inspect(self, data: bytes) -> None:
        at = 0
        while at < len(data) and not self._done:
            pos = self._pos + at
            if pos < self._header_at:  # a member's data blocks
                end = min(len(data), at + self._header_at - pos)
                if self._pax is not None:
                    self._collect_pax(data[at:end])
                at = end
                continue
            take = min(len(data) - at, BLOCK - len(self._block))
            self._block += data[at : at + take]
            at += take
            if len(self._block) == BLOCK:
                self._header(bytes(self._block), data_at=self._pos + at)
                self._block.clear()
        self._pos += len(data)

    def _header(self, block: bytes, data_at: int) -> None:
        try:
            info = tarfile.TarInfo.frombuf(block, ENCODING, ERRORS)
        except tarfile.HeaderError:
            # The end-of-archive block, or a damaged header: tarfile reads no header after
            # it either (it ends the archive or raises).
            self._done = True
            return
        where = f"tar header at byte {data_at - BLOCK}"
        if info.size < 0:
            raise InvalidArchive(f"{where}: negative size")
        if info.type == tarfile.GNUTYPE_SPARSE:
            raise InvalidArchive(f"{where}: GNU sparse members are not supported")
        if info.type in _PAX or info.type in _LONG:
            self._extended_header(info, where)
            self._header_at = data_at + _blocks(info.size)
            return
        self._chain = 0
        if info.isreg() or info.type not in tarfile.SUPPORTED_TYPES:
            if info.size > self._max_member_bytes:
                raise TooLarge(
                    f"{where}: member of {info.size} bytes exceeds {self._max_member_bytes}"
                )
            self._header_at = data_at + _blocks(info.size)
        else:
            self._header_at = data_at  # tarfile skips no data after links, dirs, devices

    def _extended_header(self, info: tarfile.TarInfo, where: str) -> None:
        kind = "pax extended header" if info.type in _PAX else "GNU long name/link"
        self._chain += 1
        if self._chain > MAX_CHAIN:
            raise InvalidArchive(f"{where}: more than {MAX_CHAIN} extended headers in a row")
        if info.size > MAX_EXTENDED_BYTES:
            raise InvalidArchive(
                f"{where}: {kind} of {info.size} bytes (at most {MAX_EXTENDED_BYTES})"
            )
        self._extended += info.size
        if self._extended > MAX_EXTENDED_TOTAL:
            raise InvalidArchive(
                f"{where}: extended headers exceed {MAX_EXTENDED_TOTAL} bytes in all"
            )
        if info.type in _PAX and info.size:
            self._pax, self._pax_size = bytearray(), info.size

    def _collect_pax(self, data: bytes) -> None:
        assert self._pax is not None
        self._pax += data[: self._pax_size - len(self._pax)]
        if len(self._pax) < self._pax_size:
            return
        records, self._pax = bytes(self._pax), None
        if any(r in records for r in _LAYOUT_RECORDS):
            raise InvalidArchive("tar pax header with a size or GNU sparse record")
        try:
            records.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArchive("tar pax header is not UTF-8") from None


def _blocks(size: int) -> int:
    """``size`` rounded up to whole blocks, as ``tarfile`` lays out member data."""
    return -(-size // BLOCK) * BLOCK
