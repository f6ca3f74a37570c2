"""The adapter service: every way an adapter arrives, is admitted, stored and looked up.

HTTP-free and engine-free; the server calls it for ``model`` lookups and the admin API.
Every :class:`Store` call blocks on the filesystem (hashing, fsync, flock), so each runs
in a worker thread (``anyio.to_thread``) and the event loop keeps serving tokens
meanwhile. The store folder may be shared with other server processes; nothing here
caches refs, so a name another replica uploaded or re-tagged is seen on the next read.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio.to_thread

from .admission import AdmissionLimits, BaseModelSpec
from .errors import AdapterNotFound, AdmissionUnavailable, StoreCorrupt, VersionNotFound
from .hub_cache import HubCache
from .manifest import Manifest
from .names import DEFAULT_TAG, parse_ref, validate_name, validate_tag
from .pulls import HubPuller
from .sources import hub
from .sources.body import BlockingReader
from .sources.hub import HubPolicy, HubRef, ProgressFn
from .sources.local import check_import_path
from .sources.upload import extract_archive
from .store import AdapterEntry, Store

log = logging.getLogger(__name__)

#: Every adapter with the manifest of each of its tags (``AdapterService.list_versions``).
VersionedEntries = list[tuple[AdapterEntry, dict[str, Manifest]]]


@dataclass(frozen=True)
class HubOptions:
    """Pulling adapters from a Hugging Face Hub endpoint."""

    #: ``owner/name``, ``owner`` or ``*``; empty: every pull is refused.
    allow: tuple[str, ...] = ()
    #: Pull an allowed repo when a request names it as ``model`` and the store lacks it.
    autoload: bool = False
    #: Disk budget of hub-pulled refs (LRU); None: never evict.
    cache_bytes: int | None = None
    #: None: huggingface_hub's own lookups (``HF_TOKEN``, ``HF_ENDPOINT``).
    token: str | None = None
    endpoint: str | None = None


@dataclass(frozen=True)
class ServiceOptions:
    """How the server opens its adapter service (built by ``cli.py``, or by tests)."""

    store_dir: Path
    #: Reads the served model's config for admission. Called once the engine is up: a
    #: hub model's config.json is in the local HF cache only after the engine fetched it.
    #: ``None`` (with a logged reason) makes the service read-only.
    base_spec: Callable[[], BaseModelSpec | None]
    limits: AdmissionLimits = field(default_factory=AdmissionLimits)
    import_roots: tuple[Path, ...] = ()
    #: Bytes of one full copy of the base model's weights (for the storage comparison).
    base_model_bytes: int | None = None
    hub: HubOptions = field(default_factory=HubOptions)


class AdapterService:
    """Async adapter operations over one :class:`Store`, admitting against one base model."""

    def __init__(self, store: Store, options: ServiceOptions, spec: BaseModelSpec | None):
        self._store = store
        self._options = options
        self._spec = spec
        self._hub_policy = HubPolicy(options.hub.allow)
        self._hub_cache = HubCache(store.root)
        self._puller = HubPuller(store, self._hub_cache, options.limits,
                                 budget=options.hub.cache_bytes, token=options.hub.token,
                                 endpoint=options.hub.endpoint)

    @classmethod
    async def open(cls, options: ServiceOptions) -> AdapterService:
        def work() -> AdapterService:
            store = Store(options.store_dir)
            store.recover()
            spec = options.base_spec()
            if spec is None:
                log.warning("adapter admission disabled: base model config unknown; "
                            "stored adapters are served, new ones are refused")
            return cls(store, options, spec)

        service = await anyio.to_thread.run_sync(work)
        log.info("adapter store at %s", options.store_dir)
        return service

    @property
    def limits(self) -> AdmissionLimits:
        return self._options.limits

    @property
    def base_spec(self) -> BaseModelSpec | None:
        """The served model's facts admission checks against (None: admission is off)."""
        return self._spec

    @property
    def base_model_bytes(self) -> int | None:
        return self._options.base_model_bytes

    # --- reading -------------------------------------------------------------------------

    async def resolve(self, ref: str) -> Manifest:
        """``name[:tag]``; or a hub repo ``owner/name[@revision]``, looked up under the name
        a pull of it stores by default, and pulled first if ``--hub-autoload`` allows."""
        if hub.is_repo_id(ref):
            return await self._resolve_hub(ref)

        def work() -> Manifest:
            manifest = self._store.resolve(ref)
            # LRU recency for refs a pull created (a no-op for others, throttled). Not keyed
            # on manifest.source: a pull of content already uploaded shares its manifest.
            parsed = parse_ref(ref)
            self._hub_cache.touch(parsed.name, parsed.effective_tag)
            return manifest

        return await anyio.to_thread.run_sync(work)

    async def _resolve_hub(self, model: str) -> Manifest:
        href = HubRef.parse(model)
        name = href.default_name
        # A revision in the model id is its tag: 'owner/name@v2' serves owner--name:v2.
        tag = href.tag if "@" in model else DEFAULT_TAG
        try:
            return await self.resolve(f"{name}:{tag}")
        except AdapterNotFound:
            if not (self._options.hub.autoload and self._hub_policy.permits(href.repo_id)):
                raise
        return await self.pull(href, name=name, tag=tag)

    async def version(self, digest: str) -> Manifest:
        return await anyio.to_thread.run_sync(self._store.version, digest)

    def path(self, manifest: Manifest) -> Path:
        """The immutable version dir the engine loads ``manifest`` from."""
        path: Path = self._store.path(manifest)
        return path

    async def list(self) -> list[AdapterEntry]:
        return await anyio.to_thread.run_sync(self._store.list)

    async def entry(self, name: str) -> AdapterEntry | None:
        """One name's tags and latest version; reads only that name's refs."""
        return await anyio.to_thread.run_sync(self._store.entry, name)

    async def list_versions(self) -> VersionedEntries:
        """Every adapter with the manifest of each of its tags, read in one worker thread
        (one thread hop per listing, not one per tag). A version deleted between listing
        and reading is left out."""

        def work() -> VersionedEntries:
            out: VersionedEntries = []
            for entry in self._store.list():
                versions: dict[str, Manifest] = {}
                for tag, digest in entry.tags.items():
                    if tag == DEFAULT_TAG and entry.latest is not None:
                        versions[tag] = entry.latest  # read by list() already
                        continue
                    # Deleted meanwhile, or unreadable (logged by the store): not listed.
                    with contextlib.suppress(VersionNotFound, StoreCorrupt):
                        versions[tag] = self._store.version(digest)
                out.append((entry, versions))
            return out

        return await anyio.to_thread.run_sync(work)

    async def referenced(self) -> set[str]:
        """Digests some ``name:tag`` still points at."""
        entries = await self.list()
        return {d for e in entries for d in e.tags.values()}

    # --- writing -------------------------------------------------------------------------

    async def import_dir(self, name: str, path: Path, tag: str = DEFAULT_TAG) -> Manifest:
        """Copy a local adapter dir into the store (server-side paths only: ``--adapter``,
        or a path :meth:`check_import_path` allowed)."""
        spec = self._require_spec()
        resolved = path.resolve()

        def work() -> Manifest:
            manifest = self._store.add(resolved, name=name, tag=tag, source=f"path:{resolved}",
                                       spec=spec, limits=self.limits)
            self._hub_cache.forget(f"{name}:{tag}")  # now an import: never evicted
            return manifest

        return await anyio.to_thread.run_sync(work)

    async def upload(self, body: AsyncIterator[bytes], name: str, tag: str) -> Manifest:
        """Extract an archive streamed from ``body`` into staging, admit and store it. The
        body is pulled chunk by chunk from the worker thread, never held whole."""
        validate_name(name)
        validate_tag(tag)
        spec = self._require_spec()
        reader = BlockingReader(body)

        def work() -> Manifest:
            with self._store.staging() as staged:
                extract_archive(reader, staged, self.limits)
                # A tar ends at its end marker, before the body may: store nothing until
                # the whole body has arrived (a client cut off after the marker is still
                # an upload that failed), and refuse bytes past the cap.
                reader.drain(self.limits.max_total_bytes)
                manifest = self._store.add(staged, name=name, tag=tag, source="upload",
                                           spec=spec, limits=self.limits)
            self._hub_cache.forget(f"{name}:{tag}")  # now an upload: never evicted
            return manifest

        return await anyio.to_thread.run_sync(work)

    async def pull(self, href: HubRef, *, name: str | None = None, tag: str = DEFAULT_TAG,
                   on_progress: ProgressFn | None = None) -> Manifest:
        """Download ``href`` from the hub, admit and store it as ``name:tag`` (default name:
        ``owner--repo``). Identical pulls running together share one download.
        ``on_progress(done, total)`` is called from a worker thread."""
        name = self.check_pull(href, name, tag)
        return await self._puller.pull(href, name, tag, self._require_spec(), on_progress)

    def check_pull(self, href: HubRef, name: str | None, tag: str) -> str:
        """The checks a pull makes before any network traffic; returns the name to use."""
        name = validate_name(name or href.default_name)
        validate_tag(tag)
        self._hub_policy.check(href)
        self._require_spec()
        return name

    async def tag(self, name: str, tag: str, digest: str) -> Manifest:
        def work() -> Manifest:
            self._store.tag(name, tag, digest)
            self._hub_cache.forget(f"{name}:{tag}")  # re-pointed by hand: no longer a cache
            return self._store.resolve(f"{name}:{tag}")

        return await anyio.to_thread.run_sync(work)

    async def delete(self, ref: str) -> set[str]:
        """Delete ``name`` or ``name:tag``; return the digests that ref pointed at."""
        parsed = parse_ref(ref)

        def work() -> set[str]:
            entry = self._store.entry(parsed.name)
            tags = dict(entry.tags) if entry else {}
            if parsed.tag is not None:
                digests = {tags[parsed.tag]} if parsed.tag in tags else set()
            else:
                digests = set(tags.values())
            self._store.delete(ref)
            self._hub_cache.forget(ref)
            return digests

        return await anyio.to_thread.run_sync(work)

    async def check_import_path(self, raw: str) -> Path:
        """The resolved dir if it lies under an ``--import-root``, else PathNotAllowed."""
        roots = self._options.import_roots
        return await anyio.to_thread.run_sync(check_import_path, raw, roots)

    def _require_spec(self) -> BaseModelSpec:
        if self._spec is None:
            raise AdmissionUnavailable(
                "adapters can not be admitted: the base model's config.json could not be "
                "read (see the server log)"
            )
        return self._spec
