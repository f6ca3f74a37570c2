"""A check on a zip's end-of-central-directory records, made before ``zipfile`` reads them.

``zipfile.ZipFile`` reads the whole central directory into memory at the size the end
record claims and builds a ``ZipInfo`` for every entry in it: ~25 MiB of directory costs
~250 MiB of RAM before any entry cap applies, and a zip64 record can claim terabytes.
:func:`check_central_directory` reads the end records itself, wherever ``zipfile`` may
take them from, and refuses a directory larger than the entry cap can need.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

from ..errors import TooLarge
from .members import MAX_NAME_BYTES

_EOCD, _EOCD_SIZE = b"PK\x05\x06", 22
_LOCATOR, _LOCATOR_SIZE = b"PK\x06\x07", 20
_EOCD64, _EOCD64_SIZE = b"PK\x06\x06", 56
_MAX_COMMENT = 0xFFFF
#: A central directory entry at most: 46 fixed bytes, a name (extraction refuses longer
#: ones) and 512 bytes of extra fields and comment (real tools write under 100).
ENTRY_BYTES = 46 + MAX_NAME_BYTES + 512


def check_central_directory(archive: BinaryIO, max_entries: int) -> None:
    """Raise :class:`TooLarge` if any end record of the seekable ``archive`` declares more
    than ``max_entries`` entries or a directory over ``max_entries * ENTRY_BYTES`` bytes.

    An archive with no end record passes: ``zipfile`` refuses it itself.
    """
    size = archive.seek(0, os.SEEK_END)
    start = max(size - _MAX_COMMENT - _EOCD_SIZE, 0)
    archive.seek(start)
    tail = archive.read(size - start)
    # zipfile takes the last end record in this window (the comment may hold others); all
    # are checked, so what it takes has been checked whichever it is.
    at = tail.rfind(_EOCD)
    while at >= 0:
        if at + _EOCD_SIZE <= len(tail):
            this_disk, total, dir_size = struct.unpack_from("<HHI", tail, at + 8)
            zip64 = _zip64_record(archive, start + at)
            if zip64 is not None:
                # zipfile replaces the 16/32-bit fields by the zip64 ones when present.
                this_disk, total, dir_size = zip64
            _check(max(this_disk, total), dir_size, max_entries)
        at = tail.rfind(_EOCD, 0, at + len(_EOCD) - 1)


def _zip64_record(archive: BinaryIO, eocd_at: int) -> tuple[int, int, int] | None:
    """Entries on this disk, entries, directory size of the zip64 end record that
    ``zipfile`` would read for the end record at ``eocd_at``: it expects the locator right
    before the end record and the zip64 record right before the locator."""
    record_at = eocd_at - _LOCATOR_SIZE - _EOCD64_SIZE
    if record_at < 0:
        return None
    archive.seek(record_at)
    data = archive.read(_EOCD64_SIZE + _LOCATOR_SIZE)
    if len(data) != _EOCD64_SIZE + _LOCATOR_SIZE:
        return None
    if data[_EOCD64_SIZE : _EOCD64_SIZE + 4] != _LOCATOR or data[:4] != _EOCD64:
        return None
    this_disk, total, dir_size = struct.unpack_from("<QQQ", data, 24)
    return this_disk, total, dir_size


def _check(entries: int, dir_size: int, max_entries: int) -> None:
    if entries > max_entries:
        raise TooLarge(f"zip lists {entries} entries, more than the cap of {max_entries}")
    cap = max_entries * ENTRY_BYTES
    if dir_size > cap:
        raise TooLarge(
            f"zip central directory of {dir_size} bytes exceeds {cap} "
            f"({max_entries} entries at most)"
        )
