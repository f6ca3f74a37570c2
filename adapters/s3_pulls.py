"""Pulls from S3-compatible object storage into the store (``adapterctl pull s3://...``,
``POST /v1/adapters/pull`` with an ``s3://`` source).

The same pull arriving twice at once (same ``name:tag`` from the same URL) shares one
download. Unlike hub pulls, S3 pulls are not a cache: nothing fetches them again on
demand, so their refs are never evicted (as uploads).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio.to_thread

from .admission import AdmissionLimits, BaseModelSpec
from .errors import AdapterError, disk_full_errors
from .manifest import Manifest
from .metrics import S3_PULLS, timed
from .names import validate_own_name, validate_tag
from .pulls import Flights
from .sources import s3
from .sources.hub import ProgressFn
from .sources.s3 import S3Policy, S3Ref
from .store import Store

log = logging.getLogger(__name__)


class S3Puller:
    """Downloads ``s3://`` prefixes into ``store``; owns the in-flight pulls."""

    def __init__(self, store: Store, limits: AdmissionLimits, policy: S3Policy, *,
                 on_stored: Callable[[str], None]) -> None:
        """``on_stored(ref)``: called (in the worker thread) once ``name:tag`` moved."""
        self._store = store
        self._limits = limits
        self._policy = policy
        self._on_stored = on_stored
        self._flights = Flights()

    def check(self, ref: S3Ref, name: str | None, tag: str) -> str:
        """The checks made before any network traffic; returns the name to store under
        (default: the prefix's last component)."""
        self._policy.check(ref)
        validate_tag(tag)
        return validate_own_name(name or ref.default_name)

    async def pull(self, ref: S3Ref, name: str, tag: str, spec: BaseModelSpec,
                   on_progress: ProgressFn | None = None) -> Manifest:
        """Download, admit and store ``ref`` as ``name:tag`` (call :meth:`check` first).
        ``on_progress(done, total)`` is called from a worker thread."""

        async def start(report: ProgressFn) -> Manifest:
            log.info("pulling %s as %s:%s", ref, name, tag)
            return await anyio.to_thread.run_sync(self.fetch, ref, name, tag, spec, report)

        return await self._flights.join((name, tag, str(ref)), start, on_progress)

    def fetch(self, ref: S3Ref, name: str, tag: str, spec: BaseModelSpec,
              on_progress: ProgressFn | None = None) -> Manifest:
        """The blocking part, for a worker thread. On any failure (a cut download, a full
        disk, a refusal) nothing is visible and nothing of it stays in ``tmp/``."""
        try:
            with disk_full_errors("downloading from object storage"), \
                    self._store.staging() as staged:
                with timed("fetch", "s3"):
                    source = s3.download(s3.client(), ref, staged, self._limits,
                                         on_progress=on_progress)
                with timed("admission", "s3"):
                    manifest = self._store.add(staged, name=name, tag=tag, source=source,
                                               spec=spec, limits=self._limits)
        except AdapterError as exc:
            S3_PULLS.labels(exc.code).inc()
            raise
        S3_PULLS.labels("ok").inc()
        self._on_stored(f"{name}:{tag}")
        return manifest
