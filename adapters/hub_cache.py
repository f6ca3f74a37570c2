"""Hub pulls as a disk cache with a byte budget, evicted least recently used first.

An uploaded or imported adapter is the only copy there is, so it is never evicted. A hub
pull can be fetched again, so the refs that pulls created are a cache: past the budget
(``--adapter-cache-bytes``), the least recently used go, and the store's ``gc`` removes
versions no ref points to any more once their grace period is over and nothing here
uses them (a version some upload also points at stays). Until then their bytes are on
disk beyond the budget.

The records are also what makes a hub id (``owner/name``) resolve: only a ref a pull
made, still pointing where the pull left it, answers for the repo.

Bookkeeping lives beside the store's own layout, in the same folder, so replicas sharing
the store share the cache::

    hub/<name>@<tag>    one line: the digest the pull pointed name:tag at
                        (mtime = last use; touched on resolve, at most every TOUCH_EVERY_S)

A record whose ref has since been re-pointed (an upload over the name, a re-tag) is stale
and ignored: only a ref that still points where the pull left it is hub-owned.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .manifest import is_digest
from .names import parse_ref

logger = logging.getLogger(__name__)

#: Touching on every request would be a metadata write per token stream; LRU needs less.
TOUCH_EVERY_S = 30.0
#: A ref used (or pulled) this recently is never evicted, whatever the budget: a request
#: may have just resolved it and not yet loaded its files (here or on another replica).
#: Longer than TOUCH_EVERY_S, so a ref in steady use always counts as recent.
RECENT_S = 120.0


@dataclass(frozen=True)
class CachedRef:
    name: str
    tag: str
    digest: str
    last_used: float


class HubCache:
    """Which ``name:tag`` refs came from hub pulls, and when each was last used."""

    def __init__(self, store_root: Path) -> None:
        self._dir = store_root / "hub"
        self._tmp = store_root / "tmp"
        self._dir.mkdir(parents=True, exist_ok=True)
        self._touched: dict[str, float] = {}  # record file -> monotonic time of last touch

    def record(self, name: str, tag: str, digest: str) -> None:
        """Note that a pull pointed ``name:tag`` at ``digest`` (atomic replace)."""
        with self.recording(name, tag) as note:
            note(digest)

    @contextlib.contextmanager
    def recording(self, name: str, tag: str) -> Iterator[Callable[[str], None]]:
        """A ``note(digest)`` that records ``name:tag`` (as :meth:`record`) without needing
        a free byte: the record's space is taken here, before the pull moves its ref. A
        disk that fills in between could otherwise leave a pulled ref that no record
        claims (the hub id would not resolve to it; the budget would never evict it)
        while the client was told the pull failed. The unused space goes on exit."""
        line_size = len(f"{'0' * 64}\n")  # a sha256 digest's line
        tmp = self._tmp / f"hub-{uuid.uuid4().hex}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            # Written (not ftruncate'd: a sparse file holds no block) so the blocks exist.
            os.write(fd, b"\n" * line_size)

            def note(digest: str) -> None:
                line = f"{digest}\n".encode()
                if len(line) != line_size:
                    raise ValueError(f"not a sha256 digest: {digest!r}")
                os.pwrite(fd, line, 0)  # over the taken bytes: nothing new to allocate
                os.replace(tmp, self._path(name, tag))

            yield note
        finally:
            os.close(fd)
            tmp.unlink(missing_ok=True)  # a no-op once noted

    def touch(self, name: str, tag: str) -> None:
        """Mark ``name:tag`` used now, if a pull created it."""
        path = self._path(name, tag)
        key = str(path)
        now = time.monotonic()
        if now - self._touched.get(key, -TOUCH_EVERY_S) < TOUCH_EVERY_S:
            return
        self._touched[key] = now
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)

    def pulled(self, name: str, tag: str, digest: str) -> bool:
        """Whether a pull pointed ``name:tag`` at ``digest`` (and nothing re-pointed it)."""
        try:
            return self._path(name, tag).read_text().strip() == digest
        except FileNotFoundError:
            return False

    def entries(self, refs: Mapping[str, Mapping[str, str]]) -> list[CachedRef]:
        """Hub-owned refs that still point where their pull left them, oldest use first.
        ``refs``: the store's ``name -> tag -> digest``."""
        out = []
        for path in self._dir.iterdir():
            name, sep, tag = path.name.partition("@")
            if not sep:
                continue
            try:
                digest = path.read_text().strip()
                used = path.stat().st_mtime
            except FileNotFoundError:
                continue
            if not is_digest(digest) or refs.get(name, {}).get(tag) != digest:
                continue  # stale: re-pointed or deleted since the pull
            out.append(CachedRef(name, tag, digest, used))
        return sorted(out, key=lambda r: r.last_used)

    def forget(self, ref: str) -> None:
        """Drop the records of ``name`` (all tags) or ``name:tag``."""
        parsed = parse_ref(ref)
        for path in list(self._dir.glob(f"{parsed.name}@*")):
            if parsed.tag is None or path.name == f"{parsed.name}@{parsed.tag}":
                path.unlink(missing_ok=True)

    def _path(self, name: str, tag: str) -> Path:
        return self._dir / f"{name}@{tag}"


def victims(cached: list[CachedRef], sizes: Mapping[str, int], budget: int,
            now: float) -> list[CachedRef]:
    """Refs to drop, oldest use first, until the hub-owned versions fit ``budget`` bytes.
    Refs used within :data:`RECENT_S` of ``now`` are never chosen (the one just pulled
    among them). A version counts once however many refs point at it and frees its bytes
    only when its last hub ref goes; ``sizes`` gives 0 for versions that stay anyway
    (an upload or a re-tag points at them too)."""
    refs_of: dict[str, int] = {}
    for ref in cached:
        refs_of[ref.digest] = refs_of.get(ref.digest, 0) + 1
    total = sum(sizes.get(d, 0) for d in refs_of)
    chosen = []
    for ref in cached:
        if total <= budget:
            break
        if now - ref.last_used < RECENT_S:
            continue
        chosen.append(ref)
        refs_of[ref.digest] -= 1
        if not refs_of[ref.digest]:
            total -= sizes.get(ref.digest, 0)
    if total > budget:
        logger.warning("hub cache holds %d bytes, over its budget of %d, after evicting "
                       "all it may", total, budget)
    return chosen

