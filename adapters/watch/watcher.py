"""The watch loop: every ``--watch-interval`` (with jitter), each watched source is
listed and the store made to match it.

- A new adapter level is fetched, admitted like an upload and registered as
  ``name[:tag]``; a changed one (its fingerprint moved) becomes a new version; one that
  vanished is unregistered (the ref goes; its files stay for the store's grace period,
  so requests already running on it finish, here and on other replicas).
- One adapter failing stops nothing else: its refusal is logged once and kept in
  :meth:`Watcher.refusals` (``GET /v1/adapters`` shows it) until the adapter changes or
  goes. A changed adapter that fails keeps its last good version served.
- A source that can not be listed (object storage down, a directory that can not be
  read) keeps its last good state: nothing is unregistered on a failed scan. A listing
  that finds no adapter at all while some are registered from the source (an empty
  mount point) needs the next listing to agree before they go.
- Ownership is checked at every move: a ref an upload, pull or tag took over (which
  forgets the watch record) is never moved by the watcher again (``name_taken``), and
  the move itself is a compare-and-set (``Store.add(expect=...)``), so an upload that
  lands while the watcher fetches wins.
- Replicas watching one source need no coordinator: content addressing gives them the
  same digests, and the shared records (:mod:`.records`) tell each one what the others
  registered already, so an unchanged adapter is fetched once per change, not per
  replica and interval (replicas that race on a change both fetch and agree).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio.to_thread

from ..admission import AdmissionLimits, BaseModelSpec
from ..errors import AdapterError, AdmissionError, InvalidName, NameTaken, disk_full_errors
from ..manifest import Manifest
from ..metrics import timed
from ..names import validate_own_name, validate_tag
from ..store import Store
from .records import WatchRecord, WatchRecords
from .sources import Candidate, WatchSource

log = logging.getLogger(__name__)

#: The interval varies by this fraction either way, so replicas started together do not
#: list the bucket in lockstep.
JITTER = 0.1


@dataclass(frozen=True)
class Refusal:
    """A watched adapter that is not (or no longer) what its source holds, and why."""

    source: str  # as listings show it
    name: str
    tag: str
    code: str
    message: str
    since: float
    fingerprint: str
    #: Refused for what its files are (admission): not retried until they change.
    #: Otherwise (object storage down, a name taken) retried every interval.
    final: bool


@dataclass
class SourceState:
    source: str
    last_scan: float | None = None
    error: str | None = None
    registered: int = 0
    empty_passes: int = 0


class Watcher:
    """Keeps the store in step with the watched sources (see the module docstring)."""

    def __init__(self, store: Store, sources: list[WatchSource], *, spec: BaseModelSpec,
                 limits: AdmissionLimits, interval_s: float,
                 on_registered: Callable[[str], None],
                 on_removed: Callable[[set[str]], Awaitable[None]]) -> None:
        """``on_registered(ref)``: called (in a worker thread) after a ref moved;
        ``on_removed(digests)``: awaited after refs went, with the digests they held."""
        self._store = store
        self._records = WatchRecords(store.root)
        self._sources = sources
        self._spec = spec
        self._limits = limits
        self._interval_s = interval_s
        self._on_registered = on_registered
        self._on_removed = on_removed
        self._refused: dict[tuple[str, str, str], Refusal] = {}
        self._states = {s.id: SourceState(s.shown) for s in sources}

    def refusals(self) -> list[Refusal]:
        return sorted(self._refused.values(), key=lambda r: (r.source, r.name, r.tag))

    def states(self) -> list[SourceState]:
        return list(self._states.values())

    async def run(self) -> None:
        """Sync every source each interval, until cancelled (the first :meth:`sync` is
        the caller's, at start-up)."""
        while True:
            await asyncio.sleep(self._interval_s * random.uniform(1 - JITTER, 1 + JITTER))
            await self.sync()

    async def sync(self) -> None:
        for source in self._sources:
            try:
                removed = await anyio.to_thread.run_sync(self._sync, source)
                if removed:
                    await self._on_removed(removed)
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must outlive any one bad pass
                log.exception("watching %s failed", source.shown)

    def _sync(self, source: WatchSource) -> set[str]:
        """One pass over ``source``; returns the digests refs no longer point at (removed
        adapters, replaced versions) for the engine to retire."""
        state = self._states[source.id]
        try:
            found = source.scan()
        except (AdapterError, OSError) as exc:
            self._scan_failed(source, state, _reason(exc)[1])
            return set()
        owned = self._records.owned_by(source.id)
        if not found and owned and state.empty_passes < 1:
            # Everything gone at once is more often an unmounted volume or a wiped
            # listing than intent: it takes a second listing to agree.
            state.empty_passes += 1
            self._scan_failed(source, state, f"listed no adapters while {len(owned)} are "
                              "registered from it; they stay unless the next listing agrees")
            return set()
        state.empty_passes = 0
        state.error = None
        state.last_scan = time.time()
        retired: set[str] = set()
        for candidate in found.values():
            replaced = self._register_one(source, candidate)
            if replaced is not None:
                retired.add(replaced)
        retired |= self._unregister_gone(source, found, owned)
        for gone in [k for k in self._refused if k[0] == source.id and k[1:] not in found]:
            del self._refused[gone]  # its adapter is gone: nothing left to refuse
        state.registered = sum(1 for k in found if (source.id, *k) not in self._refused)
        return retired

    def _scan_failed(self, source: WatchSource, state: SourceState, error: str) -> None:
        if state.error != error:
            log.warning("watch %s: %s; keeping what it registered", source.shown, error)
        state.error = error

    def _register_one(self, source: WatchSource, candidate: Candidate) -> str | None:
        key = (source.id, candidate.name, candidate.tag)
        before = self._refused.get(key)
        if before is not None and before.final and before.fingerprint == candidate.fingerprint:
            return None  # refused for these very files: wait for them to change
        try:
            replaced = self._register(source, candidate)
        except Exception as exc:  # one adapter's trouble is not the pass's
            code, message = _reason(exc)
            if before is None or (before.code, before.message) != (code, message):
                if isinstance(exc, AdapterError | OSError):
                    log.warning("watch %s: %s:%s refused: %s: %s", source.shown,
                                candidate.name, candidate.tag, code, message)
                else:
                    log.exception("watch %s: registering %s:%s failed", source.shown,
                                  candidate.name, candidate.tag)
            final = isinstance(exc, AdmissionError | InvalidName)
            self._refused[key] = Refusal(source.shown, candidate.name, candidate.tag, code,
                                         message, time.time(), candidate.fingerprint, final)
            return None
        self._refused.pop(key, None)
        return replaced

    def _register(self, source: WatchSource, candidate: Candidate) -> str | None:
        """Register ``candidate`` unless it is registered already; returns the digest its
        ref pointed at before, if it moved."""
        name, tag = validate_own_name(candidate.name), validate_tag(candidate.tag)
        # The ref first, then the record: a replica registering meanwhile writes its
        # record before it moves the ref, so this order never sees a moved ref with an
        # old record (which would look like a hand-made change).
        entry = self._store.entry(name)
        current = entry.tags.get(tag) if entry is not None else None
        record = self._records.get(name, tag)
        if record is not None and record.source != source.id:
            raise NameTaken(f"{name}:{tag} comes from another watched source")
        if record is None and current is not None:
            raise NameTaken(f"{name}:{tag} is held by an adapter that did not come from "
                            f"{source.shown}; delete it to let the watched one in")
        if record is not None and record.digest is not None:
            if current == record.digest and record.fingerprint == candidate.fingerprint:
                return None  # registered already (by this replica or another), unchanged
            if current not in (None, record.digest):
                raise NameTaken(f"{name}:{tag} was re-pointed by hand; the watcher leaves "
                                "it (delete it to let the watched one in)")
        pending = WatchRecord(name, tag, source.id, None, "")
        self._records.write(pending)  # ownership before the ref moves
        try:
            manifest = self._fetch_and_add(source, candidate, current)
        except BaseException:
            self._records.restore_if(pending, record)
            raise
        self._records.write(WatchRecord(name, tag, source.id, manifest.digest,
                                        candidate.fingerprint))
        self._on_registered(f"{name}:{tag}")
        if current == manifest.digest:
            return None
        log.info("watch %s: %s:%s -> %s", source.shown, name, tag, manifest.digest[:12])
        return current

    def _fetch_and_add(self, source: WatchSource, candidate: Candidate,
                       current: str | None) -> Manifest:
        with disk_full_errors("fetching a watched adapter"), self._store.staging() as staged:
            with timed("fetch", source.kind):
                origin = source.fetch(candidate, staged, self._limits)
            with timed("admission", source.kind):
                # expect: only where this pass saw the ref (an upload since wins).
                return self._store.add(staged, name=candidate.name, tag=candidate.tag,
                                       source=origin, spec=self._spec, limits=self._limits,
                                       expect=current)

    def _unregister_gone(self, source: WatchSource, found: dict[tuple[str, str], Candidate],
                         owned: dict[tuple[str, str], WatchRecord]) -> set[str]:
        removed: set[str] = set()
        for (name, tag), record in owned.items():
            if (name, tag) in found:
                continue
            digest = record.digest
            if digest is None:  # a registration under way or cut short: the ref is ours
                entry = self._store.entry(name)
                digest = entry.tags.get(tag) if entry is not None else None
            # Only if still where this source left it (compare-and-delete under the lock).
            if digest is not None and self._store.untag_if(name, tag, digest):
                removed.add(digest)
                log.info("watch %s: %s:%s is gone from the source; unregistered",
                         source.shown, name, tag)
            self._records.forget_if(record)
        return removed


def _reason(exc: BaseException) -> tuple[str, str]:
    """(code, message) of a refusal; no file paths (they are the server's business)."""
    if isinstance(exc, AdapterError):
        return exc.code, exc.message
    if isinstance(exc, OSError):
        return "fetch_failed", f"{type(exc).__name__}: {exc.strerror or 'I/O error'}"
    return "internal_error", f"{type(exc).__name__} (see the server log)"
