"""Hub pulls: single-flight downloads into the store, and the pull cache's disk budget.

Identical pulls that arrive together (the same ``name:tag`` from the same repo and
revision) share one download; a caller that goes away does not cancel it for the others.
After each pull, refs that pulls created are evicted least recently used first while the
hub-owned versions exceed ``--adapter-cache-bytes`` (see :mod:`.hub_cache`); their files
go when the service's gc finds them past their grace period and unused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio.to_thread

from . import hub_cache
from .admission import AdmissionLimits, BaseModelSpec
from .errors import AdapterError, disk_full_errors
from .hub_cache import HubCache
from .manifest import Manifest
from .metrics import HUB_PULL_BYTES, HUB_PULLS, timed
from .sources import hub
from .sources.hub import HubRef, ProgressFn
from .store import Store

log = logging.getLogger(__name__)

#: (name, tag, where from: a lower-cased repo@revision, an s3:// URL): what makes two
#: pulls the same pull.
PullKey = tuple[str, str, str]


class _Flight:
    """One pull in progress; later identical pulls join it instead of downloading again."""

    def __init__(self) -> None:
        self.listeners: list[ProgressFn] = []
        self.task: asyncio.Task[Manifest] | None = None

    def report(self, done: int, total: int) -> None:
        for listener in list(self.listeners):
            listener(done, total)


class Flights:
    """Single-flight pulls: one download per key, however many callers wait for it."""

    def __init__(self) -> None:
        self._flights: dict[PullKey, _Flight] = {}

    async def join(self, key: PullKey, start: Callable[[ProgressFn], Coroutine[Any, Any, Manifest]],
                   on_progress: ProgressFn | None) -> Manifest:
        """The result of the pull ``key``, started as ``start(report)`` unless one runs;
        ``on_progress(done, total)`` hears its progress (from a worker thread)."""
        flight = self._flights.get(key)
        if flight is None:
            flight = self._flights[key] = _Flight()
            flight.task = asyncio.create_task(start(flight.report))
            flight.task.add_done_callback(lambda t: self._done(key, t))
        if on_progress is not None:
            flight.listeners.append(on_progress)
        assert flight.task is not None
        try:
            # shield: a client that goes away must not cancel the download others wait for.
            return await asyncio.shield(flight.task)
        finally:
            if on_progress is not None:
                flight.listeners.remove(on_progress)

    def _done(self, key: PullKey, task: asyncio.Task[Manifest]) -> None:
        self._flights.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone


class HubPuller:
    """Downloads hub repos into ``store``; owns the in-flight pulls and the budget."""

    def __init__(self, store: Store, cache: HubCache, limits: AdmissionLimits, *,
                 budget: int | None, token: str | None, endpoint: str | None,
                 collect: Callable[[], Awaitable[object]],
                 on_stored: Callable[[str], None] = lambda ref: None) -> None:
        """``collect``: the gc to run (on the event loop) after refs were evicted;
        ``on_stored(ref)``: called (in the worker thread) once ``name:tag`` moved."""
        self._store = store
        self._collect = collect
        self._cache = cache
        self._limits = limits
        self._budget = budget
        self._token = token
        self._endpoint = endpoint
        self._on_stored = on_stored
        self._flights = Flights()

    async def pull(self, href: HubRef, name: str, tag: str, spec: BaseModelSpec,
                   on_progress: ProgressFn | None = None) -> Manifest:
        """Download, admit and store ``href`` as ``name:tag``, joining an identical pull
        already running. ``on_progress(done, total)`` is called from a worker thread."""
        # Hub ids are case-insensitive: 'Org/A' and 'org/a' arriving together share a pull.
        key = (name, tag, f"{href.repo_id.lower()}@{href.revision}")

        def start(report: ProgressFn) -> Coroutine[Any, Any, Manifest]:
            log.info("pulling %s from the hub as %s:%s", href, name, tag)
            return self._run(href, name, tag, spec, report)

        return await self._flights.join(key, start, on_progress)

    async def _run(self, href: HubRef, name: str, tag: str, spec: BaseModelSpec,
                   report: ProgressFn) -> Manifest:
        def work() -> tuple[Manifest, bool]:
            manifest = self.fetch(href, name, tag, spec, report)
            return manifest, self._enforce_budget()

        manifest, evicted = await anyio.to_thread.run_sync(work)
        if evicted:
            try:
                await self._collect()
            except AdapterError as exc:  # the pull itself worked: report that
                log.warning("gc after evicting hub refs failed: %s", exc)
        return manifest

    def fetch(self, href: HubRef, name: str, tag: str, spec: BaseModelSpec,
              on_progress: ProgressFn | None = None) -> Manifest:
        """The blocking part of a pull, for a worker thread: download ``href``, admit and
        store it as ``name:tag``, record it as hub-owned. On any failure (a cut download,
        a full disk, a refusal) nothing is visible and nothing of it stays in ``tmp/``."""
        # The record's space is taken before the ref moves (HubCache.recording); the
        # disk-full mapping is outermost so that the staging dir's creation is covered.
        try:
            with (disk_full_errors("downloading from the hub"),
                  self._cache.recording(name, tag) as note, self._store.staging() as staged):
                with timed("fetch", "hub"):
                    commit = hub.download(href, staged, self._limits, token=self._token,
                                          endpoint=self._endpoint, on_progress=on_progress)
                with timed("admission", "hub"):
                    manifest = self._store.add(staged, name=name, tag=tag,
                                               source=f"hub:{href.repo_id}@{commit}",
                                               spec=spec, limits=self._limits)
                note(manifest.digest)
            self._on_stored(f"{name}:{tag}")
        except AdapterError as exc:
            HUB_PULLS.labels(exc.code).inc()
            raise
        HUB_PULLS.labels("ok").inc()
        HUB_PULL_BYTES.inc(manifest.size_bytes)
        return manifest

    def _enforce_budget(self) -> bool:
        """Evict hub refs past the budget; return whether any went."""
        if self._budget is None:
            return False
        refs = {e.name: dict(e.tags) for e in self._store.list()}
        cached = self._cache.entries(refs)
        hub_owned = {(c.name, c.tag) for c in cached}
        # Versions some other ref (an upload, a hand-made tag) points at stay on disk
        # whatever happens to the hub refs: evicting for their bytes would free nothing.
        kept = {d for name, tags in refs.items() for tag, d in tags.items()
                if (name, tag) not in hub_owned}
        sizes = {d: 0 if d in kept else self._store.version(d).size_bytes
                 for d in {c.digest for c in cached}}
        dropped = [ref for ref in hub_cache.victims(cached, sizes, self._budget, time.time())
                   # Only if still where the pull left it (an upload may have re-pointed it).
                   if self._store.untag_if(ref.name, ref.tag, ref.digest)]
        for ref in dropped:
            self._cache.forget(f"{ref.name}:{ref.tag}")
            log.info("hub cache over %d bytes: dropped %s:%s (%s), pulled again on demand",
                     self._budget, ref.name, ref.tag, ref.digest[:12])
        return bool(dropped)
