"""Removing the files of versions nothing needs any more, on a grace period.

A version no ref points at may still be read: by a request here that resolved it before
the ref went, by this engine reloading it from disk, by another replica sharing the
store. Its files go only once it has been unreferenced for the grace period (the store's
``orphaned/`` marks say since when) and this process does not use it. Versions that had
to stay are looked at again later: one timer, not one per call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import anyio.to_thread

from .errors import AdapterError
from .store import Store

log = logging.getLogger(__name__)

#: The digests whose files this process may still read (the serving table's answer).
InUseFn = Callable[[], set[str]]
#: The digests a gc removed, in order.
Removed = list[str]
#: Least wait before a gc that left versions behind runs again (one still in use is
#: retried at this pace until it is not).
GC_RETRY_S = 60.0


class FileCollector:
    def __init__(self, store: Store, grace_s: float) -> None:
        self._store = store
        self._grace_s = grace_s
        #: Asked on the event loop: the serving table is not thread-safe.
        self.in_use: InUseFn = set
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Removed] | None = None

    async def gc(self) -> Removed:
        # A digest not in use now can only come into use through a ref, which gc checks
        # under the store's lock (or by a request that resolved it before the ref went,
        # which the grace period covers).
        in_use = set(self.in_use())
        grace = self._grace_s

        def work() -> tuple[Removed, float | None]:
            removed = self._store.gc(in_use=in_use, grace_s=grace)
            since = self._store.orphaned().values()
            return removed, (min(since) + grace if since else None)

        removed, due = await anyio.to_thread.run_sync(work)
        if due is not None:
            self._later(max(due - time.time(), GC_RETRY_S))
        return removed

    async def collect(self) -> None:
        """:meth:`gc`, for callers that must not fail because of it."""
        try:
            await self.gc()
        except AdapterError as exc:
            log.warning("adapter store gc failed: %s", exc)

    def _later(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        timer = self._timer
        if timer is not None and not timer.cancelled() and timer.when() <= loop.time() + delay:
            return  # an earlier run is planned already
        if timer is not None:
            timer.cancel()
        self._timer = loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._task is None or self._task.done():
            # Nobody awaits a planned gc: collect() logs a failure, the next delete or
            # eviction tries again.
            self._task = asyncio.ensure_future(self._planned())

    async def _planned(self) -> Removed:
        try:
            return await self.gc()
        except Exception as exc:
            log.warning("planned gc of the adapter store failed: %s", exc)
            return []
