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
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio.to_thread

from .admission import AdmissionLimits, BaseModelSpec, fitted_limits
from .collector import FileCollector, InUseFn, Removed
from .errors import (
    AdapterNotFound,
    AdmissionUnavailable,
    InvalidName,
    StoreCorrupt,
    UnsafePath,
    VersionNotFound,
    disk_full_errors,
)
from .hub_cache import HubCache
from .manifest import Manifest, is_source
from .metrics import timed
from .names import (
    DEFAULT_TAG,
    HUB_NAME_SEPARATOR,
    is_hub_name,
    parse_ref,
    validate_name,
    validate_own_name,
    validate_tag,
)
from .options import HubOptions as HubOptions
from .options import ServiceOptions
from .pulls import HubPuller
from .s3_pulls import S3Puller
from .sources import hub
from .sources.hub import HubPolicy, HubRef, ProgressFn
from .sources.local import ImportPath, check_import_path, import_dir
from .sources.s3 import S3Policy, S3Ref
from .store import AdapterEntry, Store
from .uploads import Uploads
from .watch import Watcher, parse_source
from .watch.records import WatchRecords

log = logging.getLogger(__name__)

#: Every adapter with the manifest of each of its tags (``AdapterService.list_versions``).
VersionedEntries = list[tuple[AdapterEntry, dict[str, Manifest]]]


class AdapterService:
    """Async adapter operations over one :class:`Store`, admitting against one base model."""

    def __init__(self, store: Store, options: ServiceOptions, spec: BaseModelSpec | None):
        self._store = store
        self._options = options
        self._spec = spec
        self._hub_policy = HubPolicy(options.hub.allow)
        self._hub_cache = HubCache(store.root)
        # The byte cap shrinks to what the largest legit adapter for this base model can
        # weigh (tens of MB for the bundled model, not the configured 1 GiB).
        self._limits = options.limits if spec is None else fitted_limits(options.limits, spec)
        self._collector = FileCollector(store, options.gc_grace_s)
        self._watch_records = WatchRecords(store.root)
        self._puller = HubPuller(store, self._hub_cache, self._limits,
                                 budget=options.hub.cache_bytes, token=options.hub.token,
                                 endpoint=options.hub.endpoint, collect=self.gc,
                                 # A pull by hand takes a watched name back.
                                 on_stored=self._watch_records.forget)
        self._upload = Uploads(store, self._limits, max_uploads=options.max_uploads,
                               idle_timeout_s=options.upload_idle_timeout_s,
                               store_max_bytes=options.store_max_bytes,
                               on_stored=self._forget)
        self._s3 = S3Puller(store, self._limits, S3Policy(options.s3_allow),
                            on_stored=self._forget)

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
        return self._limits

    @property
    def base_spec(self) -> BaseModelSpec | None:
        """The served model's facts admission checks against (None: admission is off)."""
        return self._spec

    @property
    def base_model_bytes(self) -> int | None:
        return self._options.base_model_bytes

    # --- reading -------------------------------------------------------------------------

    async def resolve(self, ref: str, *, pull: bool = True) -> Manifest:
        """``name[:tag]``; or a hub repo ``owner/name[@revision]``: the ref a pull of it
        made under its default name (``owner--name``), pulled first if ``--hub-autoload``
        allows and ``pull`` (False: only what is stored, for reads that must not
        download). A repo ``--hub-allow`` does not permit is never found, stored or not."""
        if hub.is_repo_id(ref):
            return await self._resolve_hub(ref, pull=pull)

        def work() -> Manifest:
            manifest = self._store.resolve(ref)
            parsed = parse_ref(ref)
            if is_hub_name(parsed.name) and self._hub_cache.pulled(
                    parsed.name, parsed.effective_tag, manifest.digest):
                # A pull's stored name is its repo by another spelling: the same
                # --hub-allow applies (it may have changed since the pull).
                repo = parsed.name.replace(HUB_NAME_SEPARATOR, "/", 1)
                if not self._hub_policy.permits(repo):
                    raise AdapterNotFound(f"adapter {ref} not found")
            # LRU recency for refs a pull created (a no-op for others, throttled). Not keyed
            # on manifest.source: a pull of content already uploaded shares its manifest.
            self._hub_cache.touch(parsed.name, parsed.effective_tag)
            return manifest

        return await anyio.to_thread.run_sync(work)

    async def _resolve_hub(self, model: str, *, pull: bool) -> Manifest:
        href = HubRef.parse(model)
        # A hub id means the hub and nothing else: with the hub off or the repo not
        # allowed, no stored adapter answers for it.
        if not self._hub_policy.permits(href.repo_id):
            raise AdapterNotFound(f"adapter {model} not found")
        name = href.default_name
        # A revision in the model id is its tag: 'owner/name@v2' serves owner--name:v2.
        tag = href.tag if "@" in model else DEFAULT_TAG

        def work() -> Manifest | None:
            try:
                manifest = self._store.resolve(f"{name}:{tag}")
            except AdapterNotFound:
                return None
            # Only a ref a pull made (and nobody re-pointed since) is the hub repo; a
            # store from before '--' names were reserved may hold an upload there.
            if not self._hub_cache.pulled(name, tag, manifest.digest):
                return None
            self._hub_cache.touch(name, tag)
            return manifest

        found = await anyio.to_thread.run_sync(work)
        if found is not None:
            return found
        if not (pull and self._options.hub.autoload):
            raise AdapterNotFound(f"adapter {model} not found")
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

    async def list_versions(self, *, start: str | None = None, limit: int | None = None
                            ) -> VersionedEntries:
        """Every adapter (or a page: ``Store.list``'s ``start`` and ``limit``) with the
        manifest of each of its tags, read in one worker thread (one thread hop per
        listing, not one per tag). A version deleted between listing and reading is left
        out."""

        def work() -> VersionedEntries:
            out: VersionedEntries = []
            for entry in self._store.list(start=start, limit=limit):
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

    async def import_dir(self, name: str, path: Path | ImportPath,
                         tag: str = DEFAULT_TAG) -> Manifest:
        """Copy a local adapter dir into the store: an operator's path (``--adapter``), or
        what :meth:`check_import_path` made of a user's, copied without following any
        symlink out of its import root."""
        validate_own_name(name)
        validate_tag(tag)
        spec = self._require_spec()
        src = path if isinstance(path, ImportPath) else path.resolve()
        source = f"path:{src}"
        if not is_source(source):  # a control character in an operator's path
            raise UnsafePath(f"{str(src)!r} can not be recorded as a source path")

        def work() -> Manifest:
            # Outermost, so the staging dir's own creation is covered too.
            with (disk_full_errors("copying the adapter in"), self._store.staging() as staged,
                  timed("admission", "path")):
                import_dir(src, staged, self.limits)
                manifest = self._store.add(staged, name=name, tag=tag, source=source,
                                           spec=spec, limits=self.limits)
            self._forget(f"{name}:{tag}")  # now an import: never evicted nor watched
            return manifest

        return await anyio.to_thread.run_sync(work)

    async def upload(self, body: AsyncIterator[bytes], name: str, tag: str) -> Manifest:
        """Receive an archive from ``body``, admit and store it as ``name:tag``
        (:class:`Uploads`). Nothing is stored unless the whole body arrived."""
        validate_own_name(name)
        validate_tag(tag)
        return await self._upload.receive(body, name, tag, self._require_spec())

    async def pull(self, href: HubRef, *, name: str | None = None, tag: str = DEFAULT_TAG,
                   on_progress: ProgressFn | None = None) -> Manifest:
        """Download ``href`` from the hub, admit and store it as ``name:tag`` (default name:
        ``owner--repo``). Identical pulls running together share one download.
        ``on_progress(done, total)`` is called from a worker thread."""
        name = self.check_pull(href, name, tag)
        return await self._puller.pull(href, name, tag, self._require_spec(), on_progress)

    def check_s3_pull(self, ref: S3Ref, name: str | None, tag: str) -> str:
        """The checks an S3 pull makes before any network traffic; returns the name."""
        name = self._s3.check(ref, name, tag)
        self._require_spec()
        return name

    async def pull_s3(self, ref: S3Ref, *, name: str, tag: str = DEFAULT_TAG,
                      on_progress: ProgressFn | None = None) -> Manifest:
        """Download ``ref`` from object storage, admit and store it as ``name:tag`` (a
        name :meth:`check_s3_pull` returned)."""
        return await self._s3.pull(ref, name, tag, self._require_spec(), on_progress)

    def watcher(self, on_removed: Callable[[set[str]], Awaitable[None]]) -> Watcher | None:
        """The loop keeping ``--watch`` sources registered (None: nothing watched, or
        admission off). ``on_removed(digests)``: refs went; retire their versions."""
        if not self._options.watch or self._spec is None:
            if self._options.watch:
                log.warning("--watch is off: the base model's config is unknown")
            return None
        return Watcher(self._store, [parse_source(w) for w in self._options.watch],
                       spec=self._spec, limits=self._limits,
                       interval_s=self._options.watch_interval_s,
                       on_registered=self._hub_cache.forget, on_removed=on_removed)

    def _forget(self, ref: str) -> None:
        """``ref`` was written by hand (or deleted): no pull or watch owns it any more."""
        self._hub_cache.forget(ref)
        self._watch_records.forget(ref)

    def check_pull(self, href: HubRef, name: str | None, tag: str) -> str:
        """The checks a pull makes before any network traffic; returns the name to use.
        A name with ``--`` must be ``href``'s own default name: ``org--a`` holding a
        pull of ``evil/b`` would answer requests for ``org/a``."""
        name = validate_name(name or href.default_name)
        if is_hub_name(name) and name != href.default_name:
            raise InvalidName(f"invalid adapter name {name!r}: a name with '--' may only "
                              f"hold pulls of its own repo ({href.default_name!r} for "
                              f"{href.repo_id}); pick a name without '--'")
        validate_tag(tag)
        self._hub_policy.check(href)
        self._require_spec()
        return name

    async def tag(self, name: str, tag: str, digest: str) -> Manifest:
        validate_own_name(name)
        validate_tag(tag)

        def work() -> Manifest:
            self._store.tag(name, tag, digest)
            self._forget(f"{name}:{tag}")  # re-pointed by hand: no longer a cache
            return self._store.resolve(f"{name}:{tag}")

        return await anyio.to_thread.run_sync(work)

    async def delete(self, ref: str) -> set[str]:
        """Delete ``name`` or ``name:tag`` (gone for lookups at once); return the digests
        it pointed at. Their files stay until :meth:`gc` may remove them: the caller runs
        it once it has let go of them (the server retires them from the engine first)."""
        parsed = parse_ref(ref)

        def work() -> set[str]:
            entry = self._store.entry(parsed.name)
            tags = dict(entry.tags) if entry else {}
            if parsed.tag is not None:
                digests = {tags[parsed.tag]} if parsed.tag in tags else set()
            else:
                digests = set(tags.values())
            self._store.delete(ref)
            self._forget(ref)
            return digests

        return await anyio.to_thread.run_sync(work)

    # --- removing files ------------------------------------------------------------------

    def set_in_use(self, fn: InUseFn) -> None:
        """Where gc asks which digests this process still uses (the serving table's
        ``digests_in_use``; called on the event loop)."""
        self._collector.in_use = fn

    async def gc(self) -> Removed:
        """Remove the files of versions no ref has pointed at for ``gc_grace_s`` and this
        process does not use (:class:`FileCollector`); return their digests."""
        return await self._collector.gc()

    async def collect(self) -> None:
        """:meth:`gc`, logging instead of raising (a delete is done whether or not its
        files could go yet)."""
        await self._collector.collect()

    async def check_import_path(self, raw: str) -> ImportPath:
        """The dir ``raw`` names if it lies under an ``--import-root`` (else
        PathNotAllowed), for :meth:`import_dir`."""
        roots = self._options.import_roots
        return await anyio.to_thread.run_sync(check_import_path, raw, roots)

    def _require_spec(self) -> BaseModelSpec:
        if self._spec is None:
            raise AdmissionUnavailable(
                "adapters can not be admitted: the base model's config.json could not be "
                "read (see the server log)"
            )
        return self._spec

