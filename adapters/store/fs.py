"""Filesystem steps the store's crash safety rests on: create whole, fsync, vanish at once."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import BinaryIO

from ..sources import CHUNK


def write_new_file(path: Path, data: bytes) -> None:
    """Create ``path`` (it must not exist) holding ``data``, flushed to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """fsync a directory, so the renames and creations in it survive power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some network filesystems refuse fsync on directories; rename is still atomic.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def discard(path: Path, parent: Path, tmp: Path) -> None:
    """Make ``path`` vanish atomically (rename into ``tmp``), then delete it at leisure."""
    trash = tmp / f"trash-{uuid.uuid4().hex}"
    os.rename(path, trash)
    fsync_dir(parent)
    shutil.rmtree(trash, ignore_errors=True)


def sha256_and_size(f: BinaryIO) -> tuple[str, int]:
    """Read ``f`` to its end; return the hex sha256 and the byte count of what was read."""
    h = hashlib.sha256()
    size = 0
    while chunk := f.read(CHUNK):
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size
