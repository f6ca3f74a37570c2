"""Archive uploads into the store: a bounded number at once, each spooled to the store's
disk as it arrives (never holding a worker thread while waiting for bytes), then
extracted, checked against the store's byte budget, admitted and stored in one worker
thread. Nothing is stored unless the whole body arrived."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio.to_thread

from .admission import AdmissionLimits, BaseModelSpec
from .errors import StoreFull, TooManyUploads, disk_full_errors
from .manifest import Manifest
from .metrics import timed
from .sources.body import spool
from .sources.upload import extract_archive
from .store import Store


class Uploads:
    """The uploads of one service (see the module docstring)."""

    def __init__(self, store: Store, limits: AdmissionLimits, *, max_uploads: int,
                 idle_timeout_s: float, store_max_bytes: int | None,
                 on_stored: Callable[[str], None]) -> None:
        """``on_stored(ref)``: called (in the worker thread) once ``name:tag`` moved."""
        self._store = store
        self._limits = limits
        self._max = max_uploads
        self._idle_timeout_s = idle_timeout_s
        self._budget = store_max_bytes
        self._on_stored = on_stored
        self._running = 0  # uploads receiving or extracting now

    async def receive(self, body: AsyncIterator[bytes], name: str, tag: str,
                      spec: BaseModelSpec) -> Manifest:
        if self._running >= self._max:
            raise TooManyUploads(f"{self._max} uploads are running; retry shortly")
        self._running += 1
        try:
            with disk_full_errors("receiving the upload"), timed("fetch", "upload"):
                spooled = await spool(body, self._store.root / "tmp",
                                      self._limits.max_total_bytes, self._idle_timeout_s)

            def work() -> Manifest:
                with (disk_full_errors("unpacking the upload"), spooled,
                      self._store.staging() as staged, timed("admission", "upload")):
                    extract_archive(spooled, staged, self._limits)
                    self._check_budget(staged)
                    manifest = self._store.add(staged, name=name, tag=tag, source="upload",
                                               spec=spec, limits=self._limits)
                self._on_stored(f"{name}:{tag}")  # now an upload: never evicted nor watched
                return manifest

            return await anyio.to_thread.run_sync(work)
        finally:
            self._running -= 1

    def _check_budget(self, staged: Path) -> None:
        """StoreFull if ``staged`` would take the store past its budget (an estimate
        counted before admission drops files: it may refuse a little early)."""
        if self._budget is None:
            return
        incoming = sum(p.stat().st_size for p in staged.rglob("*") if p.is_file())
        stored = {d: self._store.version(d).size_bytes
                  for e in self._store.list() for d in e.tags.values()}
        if sum(stored.values()) + incoming > self._budget:
            raise StoreFull(f"the store holds {sum(stored.values())} of {self._budget} "
                            f"bytes; this adapter needs {incoming} more")
