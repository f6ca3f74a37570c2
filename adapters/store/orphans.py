"""When each unreferenced version was first seen unreferenced: ``orphaned/<digest>``.

A version's files must outlive its last ref by a grace period, since requests (here or
on another replica sharing the folder) that resolved it before the ref went may still
load it, and the engine may reload it from disk. The clock is an empty marker file whose
mtime is when :meth:`Store.gc` first found the version unreferenced; writing any ref
to the version removes the marker, so a marker always means "unreferenced ever since".
A marker lost in a crash only restarts the clock (later removal, never earlier).

Writers hold the store's lock for every call here.
"""

from __future__ import annotations

import contextlib
import os

from ..manifest import is_digest
from .fs import fsync_dir
from .layout import Layout


def marked(layout: Layout) -> dict[str, float]:
    """Digest -> time (epoch seconds) it was first seen unreferenced."""
    out: dict[str, float] = {}
    for name in os.listdir(layout.orphaned):
        if is_digest(name):
            with contextlib.suppress(FileNotFoundError):
                out[name] = os.stat(f"{os.fspath(layout.orphaned)}/{name}").st_mtime
    return out


def mark(layout: Layout, digest: str, now: float) -> None:
    """Start ``digest``'s clock at ``now`` (no fsync: a lost marker only starts it later)."""
    path = layout.orphaned / digest
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    os.close(fd)
    os.utime(path, (now, now))


def unmark(layout: Layout, digest: str) -> None:
    """Stop ``digest``'s clock: a ref points at it (again)."""
    try:
        (layout.orphaned / digest).unlink()
    except FileNotFoundError:
        return
    # Durable before the ref: a marker back from a crash would date a later orphaning
    # from the earlier one, and let gc remove the version too soon.
    fsync_dir(layout.orphaned)
