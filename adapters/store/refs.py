"""Ref files: ``refs/<name>/<tag>``, one line holding the digest of a version.

Reads take no lock (a ref file is always replaced whole); writes and removals are for
callers that hold the writers' lock.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import StoreCorrupt
from ..manifest import is_digest
from ..names import NAME_PATTERN
from .fs import fsync_dir, write_new_file
from .layout import Layout

logger = logging.getLogger(__name__)


def ref_digest(path: str, name: str, tag: str) -> str | None:
    """The digest in the ref file at ``path`` (``name:tag``), None if there is none."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        data = os.read(fd, 128)  # a ref is 65 bytes; read on only if something is odd
        if len(data) == 128:
            while chunk := os.read(fd, 1 << 16):
                data += chunk
    except IsADirectoryError:
        raise StoreCorrupt(f"ref {name}:{tag} is a directory, not a ref file") from None
    finally:
        os.close(fd)
    digest = data.decode(errors="replace").strip()
    if not is_digest(digest):
        raise StoreCorrupt(f"ref {name}:{tag} does not hold a digest")
    return digest


def read_ref(layout: Layout, name: str, tag: str) -> str | None:
    """The digest ``name:tag`` points to, None if the ref does not exist."""
    try:
        text = (layout.refs / name / tag).read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    digest = text.strip()
    if not is_digest(digest):
        raise StoreCorrupt(f"ref {name}:{tag} does not hold a digest")
    return digest


def read_tags(layout: Layout, name: str, *, strict: bool) -> dict[str, str]:
    """Tags of ``name``. A corrupt ref raises when ``strict`` (anything that deletes
    must not guess), else it is logged and skipped (listing, start-up)."""
    tags: dict[str, str] = {}
    name_dir = layout.name_dir(name)
    try:
        tag_names = sorted(os.listdir(name_dir))
    except (FileNotFoundError, NotADirectoryError):
        return tags
    for tag in tag_names:
        if not NAME_PATTERN.fullmatch(tag):
            continue  # not ours (editor backups, NFS silly-renames)
        try:
            digest = ref_digest(f"{name_dir}/{tag}", name, tag)
        except StoreCorrupt:
            if strict:
                raise
            logger.warning("skipping corrupt ref %s:%s", name, tag)
            continue
        if digest is not None:
            tags[tag] = digest
    return tags


def all_refs(layout: Layout, *, strict: bool) -> dict[str, dict[str, str]]:
    """Every name that has tags: name -> tag -> digest."""
    return dict(refs_from(layout, strict=strict))


def refs_from(layout: Layout, *, strict: bool, start: str | None = None
              ) -> Iterator[tuple[str, dict[str, str]]]:
    """(name, tag -> digest) of the names that have tags, in name order from ``start``
    (inclusive): the sorted names (:func:`sorted_names`), then each name's refs only as
    the caller gets to it, so a page of a large store reads the page's refs, not all."""
    names = sorted_names(layout)
    for name in names[0 if start is None else bisect.bisect_left(names, start):]:
        tags = read_tags(layout, name, strict=strict)
        if tags:
            yield name, tags


@dataclass(frozen=True)
class _Listing:
    key: tuple[int, int, int]  # refs/'s (inode, mtime ns, link count) when it was listed
    names: tuple[str, ...]


#: The last listing of each refs/ folder. A page of 10,000 names spent most of its time
#: listing, matching and sorting all of them again (22 of 32 ms on 2 cores).
_listings: dict[str, _Listing] = {}

#: A listing is kept only if refs/ had not changed for this long when it was read: a
#: folder's mtime moves in clock ticks, so a name added in the same tick as the listing
#: could leave the key unchanged. Settled refs/ folders (the large, read-mostly ones)
#: are the ones worth keeping.
SETTLED_NS = 2_000_000_000


def sorted_names(layout: Layout) -> tuple[str, ...]:
    """Every name folder in refs/, sorted (some may have no tags left). Listed again
    whenever refs/ changed, by this process or another: adding or removing a name
    changes the folder's mtime and link count, whatever process does it."""
    path = str(layout.refs)
    st = os.stat(path)
    key = (st.st_ino, st.st_mtime_ns, st.st_nlink)
    kept = _listings.get(path)
    if kept is not None and kept.key == key:
        return kept.names
    names = tuple(sorted(n for n in os.listdir(path) if NAME_PATTERN.fullmatch(n)))
    if time.time_ns() - st.st_mtime_ns > SETTLED_NS:
        _listings[path] = _Listing(key, names)
    else:
        _listings.pop(path, None)
    return names


def referenced(layout: Layout) -> set[str]:
    """Digests some ref points to; a corrupt ref raises (callers delete what is not here)."""
    return {d for tags in all_refs(layout, strict=True).values() for d in tags.values()}


def write_ref(layout: Layout, name: str, tag: str, digest: str) -> None:
    """Point ``name:tag`` at ``digest``, replacing the ref file whole."""
    name_dir = layout.refs / name
    name_dir.mkdir(exist_ok=True)
    tmp = layout.tmp / f"ref-{uuid.uuid4().hex}"
    try:
        write_new_file(tmp, f"{digest}\n".encode())
        os.replace(tmp, name_dir / tag)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(name_dir)
    fsync_dir(layout.refs)


def remove_ref(layout: Layout, name: str, tag: str) -> None:
    """Delete the ref file of ``name:tag`` (FileNotFoundError if there is none), and the
    name's directory once its last tag is gone."""
    name_dir = layout.refs / name
    (name_dir / tag).unlink()
    fsync_dir(name_dir)
    with contextlib.suppress(OSError):  # not empty: other tags remain
        name_dir.rmdir()
