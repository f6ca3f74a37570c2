"""The :class:`Store`: adapter versions and refs in one folder (see the package docstring)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import EllipsisType

from ..admission import AdmissionLimits, BaseModelSpec, admit
from ..errors import (
    AdapterNotFound,
    NameTaken,
    StoreCorrupt,
    VersionNotFound,
    disk_full_errors,
)
from ..manifest import Manifest, is_digest, is_source
from ..names import DEFAULT_TAG, parse_ref, validate_name, validate_own_name, validate_tag
from ..sources.local import import_dir
from . import orphans, refs
from .commit import build_commit
from .fs import discard, fsync_dir
from .layout import Layout
from .lock import writer_lock
from .manifests import ManifestCache, named
from .verify import find_problems

logger = logging.getLogger(__name__)

#: Default of :meth:`Store.gc`'s ``grace_s``: longer than any request another replica
#: may still run on a version whose last ref went (streamed generations take minutes),
#: and than its engine may take to reload the files; short enough to free disk the same
#: hour.
GC_GRACE_S = 600.0


@dataclass(frozen=True)
class AdapterEntry:
    """One adapter name: its tags and the manifest its ``latest`` tag points to."""

    name: str
    tags: Mapping[str, str]  # tag -> digest
    latest: Manifest | None


class Store:
    """Adapter versions and refs in one folder. Cheap to construct; safe to share."""

    def __init__(
        self, root: Path, *, lock_timeout: float = 30.0, tmp_grace: float = 3600.0
    ) -> None:
        """``tmp_grace``: age after which :meth:`recover` deletes ``tmp/`` entries. It must
        exceed the longest upload, since another replica may still be writing there."""
        self.root = root
        self._layout = Layout(root)
        self._lock_timeout = lock_timeout
        self._tmp_grace = tmp_grace
        self._manifests = ManifestCache(self._layout)
        for d in (self._layout.versions, self._layout.refs, self._layout.tmp,
                  self._layout.orphaned):
            d.mkdir(parents=True, exist_ok=True)

    # --- writing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """An empty directory inside the store for a source to fill; removed on exit
        (after :meth:`add` has taken what it keeps)."""
        path = Path(tempfile.mkdtemp(prefix="stage-", dir=self._layout.tmp))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    @disk_full_errors("storing the adapter")
    def add(
        self,
        staged_dir: Path,
        *,
        name: str,
        tag: str = DEFAULT_TAG,
        source: str,
        spec: BaseModelSpec,
        limits: AdmissionLimits,
        expect: str | EllipsisType | None = ...,
    ) -> Manifest:
        """Admit ``staged_dir``, store it as a version, point ``name:tag`` at it.

        ``expect`` (a digest, or None for "no such ref"): move the ref only if it still
        points there, compared under the store's lock, else :class:`NameTaken` (unless it
        points at this very version already) and nothing is stored: a writer that decided
        from an earlier read (a watcher) can not overwrite what an upload put there since.

        ``staged_dir`` should come from :meth:`staging`; its kept files are moved, not
        copied. Any other directory is first copied into a staging dir, so nobody can
        change the files between admission and commit. ``source`` is ``upload``,
        ``path:<abs path>``, ``hub:<repo>@<revision>`` or ``s3://<bucket>/<prefix>@<etag>``.
        Only ``name:tag`` moves: adding ``name:canary`` leaves ``name`` (=
        ``name:latest``) where it was. Names with ``--`` are for ``hub:`` sources only
        (:class:`InvalidName` otherwise).
        """
        validate_name(name)
        validate_tag(tag)
        if not is_source(source):
            raise ValueError(f"bad source {source!r}: upload | path:<abs> | hub:<repo>@<rev> "
                             "| s3://<bucket>/<prefix>@<etag>")
        if not source.startswith("hub:"):
            validate_own_name(name)  # names with '--' are for pulls only
        if staged_dir.resolve().parent != self._layout.tmp.resolve():
            with self.staging() as own:
                import_dir(staged_dir, own, limits)
                return self.add(own, name=name, tag=tag, source=source, spec=spec, limits=limits,
                                expect=expect)

        report = admit(staged_dir, spec, limits)
        commit = Path(tempfile.mkdtemp(prefix="commit-", dir=self._layout.tmp))
        try:
            manifest = build_commit(commit, staged_dir, report, name=name, spec=spec,
                                    source=source)
            digest = manifest.digest
            with self._lock():
                if expect is not ...:
                    now = refs.read_ref(self._layout, name, tag)
                    if now not in (expect, digest):
                        raise NameTaken(f"{name}:{tag} was re-pointed meanwhile (by an "
                                        "upload, a pull or a tag); left as it is")
                final = self._layout.versions / digest
                if final.exists():
                    # Same content already stored (maybe under another name): reuse it.
                    manifest = self._manifests.load(digest)
                    logger.info("version %s already stored; reusing it", digest)
                else:
                    os.rename(commit, final)
                    fsync_dir(self._layout.versions)
                    logger.info("stored version %s (%s)", digest, report.peft_type)
                self._write_ref(name, tag, digest)
        finally:
            shutil.rmtree(commit, ignore_errors=True)  # a no-op once renamed
        logger.info("%s:%s -> %s", name, tag, digest)
        return manifest.model_copy(update={"name": name})

    @disk_full_errors("moving the tag")
    def tag(self, name: str, tag: str, digest: str) -> None:
        """Point ``name:tag`` at an existing version (promote, pin, roll back). Not under
        a name with ``--``: those only ever hold what a pull stored."""
        validate_own_name(name)
        validate_tag(tag)
        if not is_digest(digest):
            raise VersionNotFound(f"{digest!r} is not a sha256 digest")
        with self._lock():
            if not self._layout.has_version(digest):
                raise VersionNotFound(f"no stored version {digest}")
            self._write_ref(name, tag, digest)
        logger.info("%s:%s -> %s", name, tag, digest)

    @disk_full_errors("removing the tag")
    def untag_if(self, name: str, tag: str, digest: str) -> bool:
        """Remove ``name:tag`` only if it still points at ``digest``: compare and delete
        under the lock, so a ref re-pointed meanwhile (another pull, another replica)
        stays. The version stays until :meth:`gc`. Returns whether the tag was removed."""
        with self._lock():
            try:
                if refs.read_ref(self._layout, name, tag) != digest:
                    return False
            except StoreCorrupt:
                return False
            refs.remove_ref(self._layout, name, tag)
        logger.info("removed %s:%s (was %s)", name, tag, digest)
        return True

    @disk_full_errors("deleting the adapter")
    def delete(self, ref: str) -> None:
        """``name``: remove all its tags at once; ``name:tag``: that tag only. Lookups
        fail from now on; the versions stay until :meth:`gc` removes them."""
        parsed = parse_ref(ref)
        with self._lock():
            if parsed.tag is not None:
                try:
                    refs.remove_ref(self._layout, parsed.name, parsed.tag)
                except FileNotFoundError:
                    raise AdapterNotFound(f"adapter {ref} not found") from None
                logger.info("deleted tag %s", ref)
                return
            name_dir = self._layout.refs / parsed.name
            if not name_dir.is_dir():
                raise AdapterNotFound(f"adapter {ref} not found")
            # One rename removes every tag at once; readers never see half a name.
            discard(name_dir, self._layout.refs, self._layout.tmp)
            logger.info("deleted adapter %s", ref)

    @disk_full_errors("collecting unused versions")
    def gc(self, *, in_use: Collection[str] = (), grace_s: float = GC_GRACE_S,
           now: float | None = None) -> list[str]:
        """Remove the versions no ref has pointed at for ``grace_s`` seconds, except those
        in ``in_use`` (their files are still read here); return their digests.

        A version found unreferenced for the first time starts its clock now (an
        ``orphaned/<digest>`` marker, shared by every replica); any ref written to it
        stops it. ``grace_s=0`` removes every unreferenced version not in use at once.
        """
        now = time.time() if now is None else now
        with self._lock():
            referenced = refs.referenced(self._layout)
            since = orphans.marked(self._layout)
            versions = {d.name for d in self._layout.versions.iterdir() if is_digest(d.name)}
            for digest in sorted(since.keys() - versions):  # version gone: marker too
                orphans.unmark(self._layout, digest)
            for digest in sorted(since.keys() & referenced):  # a ref came back
                orphans.unmark(self._layout, digest)
            removed = []
            for digest in sorted(versions - referenced):
                if digest not in since:
                    orphans.mark(self._layout, digest, now)
                    since[digest] = now
                if now - since[digest] >= grace_s and digest not in in_use:
                    self._remove_version(digest)
                    orphans.unmark(self._layout, digest)
                    removed.append(digest)
        if removed:
            logger.info("gc removed %d unreferenced versions", len(removed))
        return removed

    def orphaned(self) -> dict[str, float]:
        """Versions :meth:`gc` found unreferenced and kept: digest -> since when (epoch s)."""
        return orphans.marked(self._layout)

    def recover(self) -> None:
        """Start-up cleanup: delete ``tmp/`` entries older than the grace period (left by
        crashes) and log refs that point at missing versions. Never deletes versions."""
        now = time.time()
        with self._lock():
            for entry in self._layout.tmp.iterdir():
                try:
                    age = now - entry.lstat().st_mtime
                except FileNotFoundError:
                    continue
                if age < self._tmp_grace:
                    continue
                logger.info("removing leftover %s (%.0f s old)", entry, age)
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
            for name, tags in refs.all_refs(self._layout, strict=False).items():
                for tag, digest in tags.items():
                    if not self._layout.has_version(digest):
                        logger.warning("ref %s:%s points at missing version %s", name, tag, digest)

    # --- reading -------------------------------------------------------------------------

    def resolve(self, ref: str) -> Manifest:
        """The manifest ``name`` or ``name:tag`` points to, carrying the requested name."""
        parsed = parse_ref(ref)
        tag = parsed.effective_tag
        digest = refs.ref_digest(self._layout.ref_path(parsed.name, tag), parsed.name, tag)
        if digest is None:
            raise AdapterNotFound(f"adapter {ref} not found")
        try:
            manifest = self._manifests.load(digest)
        except VersionNotFound:
            # The name was deleted between reading the ref and the version.
            raise AdapterNotFound(f"adapter {ref} not found") from None
        return named(manifest, parsed.name)

    def path(self, manifest: Manifest) -> Path:
        """The directory to hand the engine: the version's adapter files."""
        return self._layout.adapter_dir(manifest.digest)

    def version(self, digest: str) -> Manifest:
        """The manifest of a version by digest; raises :class:`VersionNotFound`."""
        if not is_digest(digest):
            raise VersionNotFound(f"{digest!r} is not a sha256 digest")
        return self._manifests.load(digest)

    def verify(self) -> list[str]:
        """Re-check everything readers can see; return the problems (empty: consistent).

        Each ``versions/<digest>`` must hold a readable manifest of that digest, exactly
        the manifest's files with their recorded size and sha256, and ``<digest>`` must be
        :func:`content_digest` of them; each ref must hold the digest of a version that has
        a manifest. Reads every byte afresh (no manifest cache), takes no lock and changes
        nothing, so it may run beside live servers: a version or ref deleted meanwhile is
        skipped, not reported. ``tmp/`` is not checked (nothing in it is visible), nor are
        non-digest names under ``versions/`` (:meth:`gc` ignores them too).
        """
        return find_problems(self._layout)

    def list(self, *, start: str | None = None, limit: int | None = None
             ) -> list[AdapterEntry]:
        """Every name, sorted; or a page of them: from name ``start`` (inclusive), at most
        ``limit`` names. One directory listing per name listed and one small read per tag
        (no cache: another process's writes show at once); manifests come from the cache
        after one ``stat``."""
        found = refs.refs_from(self._layout, strict=False, start=start)
        return [AdapterEntry(name=name, tags=tags, latest=self._latest(name, tags))
                for name, tags in itertools.islice(found, limit)]

    def entry(self, name: str) -> AdapterEntry | None:
        """One name's :class:`AdapterEntry` (what :meth:`list` holds for it), or None if
        it has no tags. Reads only that name's refs, whatever the size of the store."""
        validate_name(name)
        tags = refs.read_tags(self._layout, name, strict=False)
        return AdapterEntry(name=name, tags=tags, latest=self._latest(name, tags)) if tags else None

    def _latest(self, name: str, tags: Mapping[str, str]) -> Manifest | None:
        digest = tags.get(DEFAULT_TAG)
        if digest is None:
            return None
        try:
            return named(self._manifests.load(digest), name)
        except (VersionNotFound, StoreCorrupt):
            return None

    # --- internals -----------------------------------------------------------------------

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        return writer_lock(self._layout, self._lock_timeout)

    def _write_ref(self, name: str, tag: str, digest: str) -> None:
        # A method, not a direct call, so tests can fail the step between version and ref.
        orphans.unmark(self._layout, digest)  # referenced again: its clock stops
        refs.write_ref(self._layout, name, tag, digest)

    def _remove_version(self, digest: str) -> None:
        self._manifests.forget(digest)
        path = self._layout.versions / digest
        if path.exists():
            discard(path, self._layout.versions, self._layout.tmp)
            logger.info("removed version %s", digest)
