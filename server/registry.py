"""The adapter store as the server uses it: async, and admitting against the served model.

Every ``Store`` call blocks on the filesystem (hashing, fsync, flock), so each runs in a
worker thread (``anyio.to_thread``) and the event loop keeps serving tokens meanwhile.
The store folder may be shared with other server processes; nothing here caches refs,
so a name another replica uploaded or re-tagged is seen on the next read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.from_thread
import anyio.to_thread

from ..adapters.admission import AdmissionLimits, BaseModelSpec
from ..adapters.manifest import Manifest
from ..adapters.names import parse_ref, validate_name, validate_tag
from ..adapters.sources.upload import extract_archive
from ..adapters.store import AdapterEntry, Store
from .errors import AdmissionUnavailable, InvalidRequest, PathNotAllowed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistryOptions:
    """How the app opens its registry (built by ``cli.py``, or by tests)."""

    store_dir: Path
    #: Reads the served model's config for admission. Called once the engine is up: a
    #: hub model's config.json is in the local HF cache only after the engine fetched it.
    #: ``None`` (with a logged reason) makes the registry read-only.
    base_spec: Callable[[], BaseModelSpec | None]
    limits: AdmissionLimits = field(default_factory=AdmissionLimits)
    import_roots: tuple[Path, ...] = ()
    #: Bytes of one full copy of the base model's weights (for the storage comparison).
    base_model_bytes: int | None = None


class Registry:
    """Async facade over :class:`Store` plus the server's admission inputs."""

    def __init__(self, store: Store, options: RegistryOptions, spec: BaseModelSpec | None):
        self._store = store
        self._options = options
        self._spec = spec

    @classmethod
    async def open(cls, options: RegistryOptions) -> Registry:
        def work() -> Registry:
            store = Store(options.store_dir)
            store.recover()
            spec = options.base_spec()
            if spec is None:
                log.warning("adapter admission disabled: base model config unknown; "
                            "stored adapters are served, new ones are refused")
            return cls(store, options, spec)

        registry = await anyio.to_thread.run_sync(work)
        log.info("adapter store at %s", options.store_dir)
        return registry

    @property
    def limits(self) -> AdmissionLimits:
        return self._options.limits

    @property
    def base_model_bytes(self) -> int | None:
        return self._options.base_model_bytes

    # --- reading -------------------------------------------------------------------------

    async def resolve(self, ref: str) -> Manifest:
        return await anyio.to_thread.run_sync(self._store.resolve, ref)

    async def version(self, digest: str) -> Manifest:
        return await anyio.to_thread.run_sync(self._store.version, digest)

    def path(self, manifest: Manifest) -> Path:
        path: Path = self._store.path(manifest)
        return path

    async def list(self) -> list[AdapterEntry]:
        return await anyio.to_thread.run_sync(self._store.list)

    async def referenced(self) -> set[str]:
        """Digests some ``name:tag`` still points at."""
        entries = await self.list()
        return {d for e in entries for d in e.tags.values()}

    # --- writing -------------------------------------------------------------------------

    async def import_dir(self, name: str, path: Path, tag: str = "latest") -> Manifest:
        """Copy a local adapter dir into the store (server-side paths only: ``--adapter``,
        or a path :meth:`check_import_path` allowed)."""
        spec = self._require_spec()
        resolved = path.resolve()

        def work() -> Manifest:
            return self._store.add(resolved, name=name, tag=tag, source=f"path:{resolved}",
                                   spec=spec, limits=self.limits)

        return await anyio.to_thread.run_sync(work)

    async def upload(self, body: AsyncIterator[bytes], name: str, tag: str) -> Manifest:
        """Extract an archive streamed from ``body`` into staging, admit and store it. The
        body is pulled chunk by chunk from the worker thread, never held whole."""
        validate_name(name)
        validate_tag(tag)
        spec = self._require_spec()
        reader = _BlockingReader(body)

        def work() -> Manifest:
            with self._store.staging() as staged:
                extract_archive(reader, staged, self.limits)
                return self._store.add(staged, name=name, tag=tag, source="upload",
                                       spec=spec, limits=self.limits)

        return await anyio.to_thread.run_sync(work)

    async def tag(self, name: str, tag: str, digest: str) -> Manifest:
        def work() -> Manifest:
            self._store.tag(name, tag, digest)
            return self._store.resolve(f"{name}:{tag}")

        return await anyio.to_thread.run_sync(work)

    async def delete(self, ref: str) -> set[str]:
        """Delete ``name`` or ``name:tag``; return the digests that ref pointed at."""
        parsed = parse_ref(ref)

        def work() -> set[str]:
            entry = next((e for e in self._store.list() if e.name == parsed.name), None)
            tags = dict(entry.tags) if entry else {}
            if parsed.tag is not None:
                digests = {tags[parsed.tag]} if parsed.tag in tags else set()
            else:
                digests = set(tags.values())
            self._store.delete(ref)
            return digests

        return await anyio.to_thread.run_sync(work)

    async def check_import_path(self, raw: str) -> Path:
        """The resolved dir if it lies under an ``--import-root``, else PathNotAllowed."""
        roots = self._options.import_roots
        return await anyio.to_thread.run_sync(_check_import_path, raw, roots)

    def _require_spec(self) -> BaseModelSpec:
        if self._spec is None:
            raise AdmissionUnavailable(
                "adapters can not be admitted: the base model's config.json could not be "
                "read (see the server log)"
            )
        return self._spec


def _check_import_path(raw: str, roots: tuple[Path, ...]) -> Path:
    path = Path(raw)
    if not path.is_absolute():
        raise InvalidRequest(f"lora_path must be an absolute path, got {raw!r}",
                             param="lora_path")
    # resolve() collapses '..' and follows every symlink, so the check is on the real place.
    resolved = path.resolve()
    root = next((r for r in roots if resolved.is_relative_to(r)), None)
    if root is None:
        raise PathNotAllowed(
            f"lora_path {raw!r} is not under an import root of this server "
            "(--import-root)", param="lora_path",
        )
    # The local source follows symlinked files (HF cache snapshots are symlink farms);
    # each target must stay under the root too, or a link would smuggle any file in.
    for dirpath, _, filenames in os.walk(resolved):
        for name in filenames:
            target = Path(dirpath, name).resolve()
            if not target.is_relative_to(root):
                raise PathNotAllowed(
                    f"lora_path {raw!r}: {name} links outside the import root",
                    param="lora_path",
                )
    return resolved


class _BlockingReader:
    """``read(n)`` over an async byte iterator, for sync code in an anyio worker thread."""

    def __init__(self, body: AsyncIterator[bytes]) -> None:
        self._body = body
        self._buffer = bytearray()
        self._eof = False

    def read(self, size: int = -1, /) -> bytes:
        while not self._eof and (size < 0 or len(self._buffer) < size):
            chunk = anyio.from_thread.run(self._next)
            if chunk is None:
                self._eof = True
            else:
                self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def _next(self) -> bytes | None:
        try:
            return await anext(self._body)
        except StopAsyncIteration:
            return None
