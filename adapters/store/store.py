"""Content-addressed adapter store on a local or shared folder.

Layout under ``root``::

    versions/<digest>/manifest.json    immutable once visible
    versions/<digest>/adapter/...      the adapter files (what the engine loads)
    refs/<name>/<tag>                  one line: the digest ("latest" is the default tag)
    tmp/                               staging, commits in progress, trash
    lock                               fcntl.flock target for writers

Crash safety comes from building everything under ``tmp/`` (same filesystem) and making
it visible with one ``rename``: a version dir appears whole with its manifest, a ref file
is replaced whole. A crash leaves at most unreferenced entries in ``tmp/`` (removed by
:meth:`Store.recover` after a grace period) or a complete version no ref points to yet
(removed only by :meth:`Store.gc`).

Concurrency: several processes (server replicas) may share the folder. Writers take an
exclusive ``flock`` on ``lock`` for the short publish step only; admission and hashing run
before it. Readers take no lock: every visible file is complete. ``flock`` (not
``lockf``) so two ``Store`` objects in one process also exclude each other; on Linux NFS
it is mapped to POSIX byte-range locks and works across hosts.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from .admission import AdmissionLimits, BaseModelSpec, admit
from .errors import (
    AdapterNotFound,
    StoreBusy,
    StoreCorrupt,
    VersionNotFound,
)
from .manifest import (
    BaseModelRef,
    FileEntry,
    Manifest,
    content_digest,
    is_digest,
    is_source,
)
from .names import DEFAULT_TAG, NAME_PATTERN, parse_ref, validate_name, validate_tag
from .sources.local import import_dir

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
ADAPTER_DIR = "adapter"
CHUNK = 1 << 20


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
        self._versions = root / "versions"
        self._refs = root / "refs"
        self._tmp = root / "tmp"
        self._lock_path = root / "lock"
        self._lock_timeout = lock_timeout
        self._tmp_grace = tmp_grace
        # Versions are immutable, so a manifest once read stays true (while it exists).
        self._manifests: dict[str, Manifest] = {}
        # (st_dev, st_ino, st_mtime_ns) of each cached manifest file: a version deleted and
        # stored again (new created_at, source) by another process is read afresh.
        self._manifest_stamps: dict[str, tuple[int, int, int]] = {}
        for d in (self._versions, self._refs, self._tmp):
            d.mkdir(parents=True, exist_ok=True)

    # --- writing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """An empty directory inside the store for a source to fill; removed on exit
        (after :meth:`add` has taken what it keeps)."""
        path = Path(tempfile.mkdtemp(prefix="stage-", dir=self._tmp))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def add(
        self,
        staged_dir: Path,
        *,
        name: str,
        tag: str = "latest",
        source: str,
        spec: BaseModelSpec,
        limits: AdmissionLimits,
    ) -> Manifest:
        """Admit ``staged_dir``, store it as a version, point ``name:tag`` at it.

        ``staged_dir`` should come from :meth:`staging`; its kept files are moved, not
        copied. Any other directory is first copied into a staging dir, so nobody can
        change the files between admission and commit. ``source`` is ``upload``,
        ``path:<abs path>`` or ``hub:<repo>@<revision>``. Only ``name:tag`` moves:
        adding ``name:canary`` leaves ``name`` (= ``name:latest``) where it was.
        """
        validate_name(name)
        validate_tag(tag)
        if not is_source(source):
            raise ValueError(f"bad source {source!r}: upload | path:<abs> | hub:<repo>@<rev>")
        if staged_dir.resolve().parent != self._tmp.resolve():
            with self.staging() as own:
                import_dir(staged_dir, own, limits)
                return self.add(own, name=name, tag=tag, source=source, spec=spec, limits=limits)

        report = admit(staged_dir, spec, limits)
        commit = Path(tempfile.mkdtemp(prefix="commit-", dir=self._tmp))
        try:
            os.chmod(commit, 0o755)  # mkdtemp's 0700 would hide it from other users
            adapter = commit / ADAPTER_DIR
            adapter.mkdir()
            files = [self._take_file(staged_dir, adapter, rel) for rel in report.files]
            digest = content_digest(files)
            manifest = Manifest(
                name=name,
                digest=digest,
                peft_type=report.peft_type,
                rank=report.rank,
                alpha=report.alpha,
                target_modules=report.target_modules,
                num_virtual_tokens=report.num_virtual_tokens,
                base_model=BaseModelRef(model_id=spec.model_id, fingerprint=spec.fingerprint),
                declared_base_model=report.declared_base_model,
                files=tuple(files),
                size_bytes=sum(f.size for f in files),
                created_at=datetime.now(UTC),
                source=source,
                warnings=report.warnings,
            )
            _write_new_file(commit / MANIFEST_FILE, manifest.model_dump_json(indent=2).encode())
            _fsync(adapter)
            _fsync(commit)
            with self._lock():
                final = self._versions / digest
                if final.exists():
                    # Same content already stored (maybe under another name): reuse it.
                    manifest = self._load_manifest(digest)
                    logger.info("version %s already stored; reusing it", digest)
                else:
                    os.rename(commit, final)
                    _fsync(self._versions)
                    logger.info("stored version %s (%s)", digest, report.peft_type)
                self._write_ref(name, tag, digest)
        finally:
            shutil.rmtree(commit, ignore_errors=True)  # a no-op once renamed
        logger.info("%s:%s -> %s", name, tag, digest)
        return manifest.model_copy(update={"name": name})

    def tag(self, name: str, tag: str, digest: str) -> None:
        """Point ``name:tag`` at an existing version (promote, pin, roll back)."""
        validate_name(name)
        validate_tag(tag)
        if not is_digest(digest):
            raise VersionNotFound(f"{digest!r} is not a sha256 digest")
        with self._lock():
            if not (self._versions / digest / MANIFEST_FILE).is_file():
                raise VersionNotFound(f"no stored version {digest}")
            self._write_ref(name, tag, digest)
        logger.info("%s:%s -> %s", name, tag, digest)

    def untag_if(self, name: str, tag: str, digest: str) -> bool:
        """Remove ``name:tag`` only if it still points at ``digest``: compare and delete
        under the lock, so a ref re-pointed meanwhile (an upload, another replica) stays.
        The version stays until :meth:`gc`. Returns whether the tag was removed."""
        with self._lock():
            try:
                if self._read_ref(name, tag) != digest:
                    return False
            except StoreCorrupt:
                return False
            name_dir = self._refs / name
            (name_dir / tag).unlink()
            _fsync(name_dir)
            with contextlib.suppress(OSError):  # not empty: other tags remain
                name_dir.rmdir()
        logger.info("removed %s:%s (was %s)", name, tag, digest)
        return True

    def delete(self, ref: str) -> None:
        """``name``: remove all its tags and the versions no other ref uses.
        ``name:tag``: remove that tag only (its version stays until :meth:`gc`)."""
        parsed = parse_ref(ref)
        with self._lock():
            name_dir = self._refs / parsed.name
            if parsed.tag is not None:
                try:
                    (name_dir / parsed.tag).unlink()
                except FileNotFoundError:
                    raise AdapterNotFound(f"adapter {ref} not found") from None
                _fsync(name_dir)
                with contextlib.suppress(OSError):  # not empty: other tags remain
                    name_dir.rmdir()
                logger.info("deleted tag %s", ref)
                return
            if not name_dir.is_dir():
                raise AdapterNotFound(f"adapter {ref} not found")
            digests = set(self._read_tags(parsed.name, strict=True).values())
            # One rename removes every tag at once; readers never see half a name.
            self._discard(name_dir, self._refs)
            for digest in digests - self._referenced():
                self._remove_version(digest)
            logger.info("deleted adapter %s", ref)

    def gc(self) -> list[str]:
        """Remove versions no ref points to; return their digests."""
        with self._lock():
            referenced = self._referenced()
            removed = [
                d.name
                for d in sorted(self._versions.iterdir())
                if d.name not in referenced and is_digest(d.name)
            ]
            for digest in removed:
                self._remove_version(digest)
        if removed:
            logger.info("gc removed %d unreferenced versions", len(removed))
        return removed

    def recover(self) -> None:
        """Start-up cleanup: delete ``tmp/`` entries older than the grace period (left by
        crashes) and log refs that point at missing versions. Never deletes versions."""
        now = time.time()
        with self._lock():
            for entry in self._tmp.iterdir():
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
            for name, tags in self._all_refs(strict=False).items():
                for tag, digest in tags.items():
                    if not (self._versions / digest / MANIFEST_FILE).is_file():
                        logger.warning("ref %s:%s points at missing version %s", name, tag, digest)

    # --- reading -------------------------------------------------------------------------

    def resolve(self, ref: str) -> Manifest:
        """The manifest ``name`` or ``name:tag`` points to, carrying the requested name."""
        parsed = parse_ref(ref)
        tag = parsed.effective_tag
        digest = _ref_digest(f"{os.fspath(self._refs)}/{parsed.name}/{tag}", parsed.name, tag)
        if digest is None:
            raise AdapterNotFound(f"adapter {ref} not found")
        try:
            manifest = self._load_manifest(digest)
        except VersionNotFound:
            # The name was deleted between reading the ref and the version.
            raise AdapterNotFound(f"adapter {ref} not found") from None
        return _named(manifest, parsed.name)

    def path(self, manifest: Manifest) -> Path:
        """The directory to hand the engine: the version's adapter files."""
        return self._versions / manifest.digest / ADAPTER_DIR

    def version(self, digest: str) -> Manifest:
        """The manifest of a version by digest; raises :class:`VersionNotFound`."""
        if not is_digest(digest):
            raise VersionNotFound(f"{digest!r} is not a sha256 digest")
        return self._load_manifest(digest)

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
        problems: list[str] = []
        for vdir in sorted(self._versions.iterdir()):
            if is_digest(vdir.name):
                found = self._verify_version(vdir)
                if found and vdir.exists():  # else deleted meanwhile: not a problem
                    problems += found
        for ref_file in sorted(self._refs.glob("*/*")):
            name, tag = ref_file.parent.name, ref_file.name
            if not (NAME_PATTERN.fullmatch(name) and NAME_PATTERN.fullmatch(tag)):
                continue  # not ours, as in _read_tags
            if ref_file.is_dir():
                problems.append(f"ref {name}:{tag} is a directory, not a ref file")
                continue
            try:
                digest = self._read_ref(name, tag)
            except StoreCorrupt as exc:
                problems.append(exc.message)
                continue
            if (digest is not None and not (self._versions / digest / MANIFEST_FILE).is_file()
                    and self._read_ref(name, tag) == digest):  # not deleted meanwhile
                problems.append(f"ref {name}:{tag} points at missing version {digest}")
        return problems

    def _verify_version(self, vdir: Path) -> list[str]:
        digest = vdir.name
        try:
            manifest = Manifest.model_validate_json((vdir / MANIFEST_FILE).read_bytes())
        except (OSError, ValidationError) as exc:
            return [f"version {digest}: no readable {MANIFEST_FILE} ({type(exc).__name__})"]
        problems = []
        if manifest.digest != digest:
            problems.append(f"version {digest}: its manifest is that of {manifest.digest}")
        if content_digest(manifest.files) != digest:
            problems.append(f"version {digest}: content digest of the manifest's files differs")
        if manifest.size_bytes != sum(f.size for f in manifest.files):
            problems.append(f"version {digest}: size_bytes is not the sum of the file sizes")
        adapter = vdir / ADAPTER_DIR
        for entry in manifest.files:
            rel = Path(entry.path)
            if rel.is_absolute() or ".." in rel.parts:
                problems.append(f"version {digest}: file path {entry.path!r} leaves the version")
                continue
            path = adapter / rel
            h, size = hashlib.sha256(), 0
            try:
                if path.is_symlink() or not path.is_file():
                    raise FileNotFoundError(path)
                with open(path, "rb") as f:
                    while chunk := f.read(CHUNK):
                        h.update(chunk)
                        size += len(chunk)
            except OSError:
                problems.append(f"version {digest}: {entry.path} is missing or unreadable")
                continue
            if size != entry.size:
                problems.append(f"version {digest}: {entry.path} has {size} bytes, "
                                f"manifest says {entry.size}")
            elif h.hexdigest() != entry.sha256:
                problems.append(f"version {digest}: {entry.path} sha256 differs from manifest")
        listed = {f.path for f in manifest.files}
        for p in sorted(adapter.rglob("*")):
            rel_path = p.relative_to(adapter).as_posix()
            if (p.is_symlink() or not p.is_dir()) and rel_path not in listed:
                problems.append(f"version {digest}: {rel_path} is not in the manifest")
        return problems

    def list(self) -> list[AdapterEntry]:
        """Every name, sorted. One directory listing per name and one small read per tag
        (no cache: another process's writes show at once); manifests come from the cache
        after one ``stat``."""
        return [
            AdapterEntry(name=name, tags=tags, latest=self._latest(name, tags))
            for name, tags in sorted(self._all_refs(strict=False).items())
        ]

    def entry(self, name: str) -> AdapterEntry | None:
        """One name's :class:`AdapterEntry` (what :meth:`list` holds for it), or None if
        it has no tags. Reads only that name's refs, whatever the size of the store."""
        validate_name(name)
        tags = self._read_tags(name, strict=False)
        return AdapterEntry(name=name, tags=tags, latest=self._latest(name, tags)) if tags else None

    def _latest(self, name: str, tags: Mapping[str, str]) -> Manifest | None:
        digest = tags.get(DEFAULT_TAG)
        if digest is None:
            return None
        try:
            return _named(self._load_manifest(digest), name)
        except (VersionNotFound, StoreCorrupt):
            return None

    # --- internals -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # A fresh open per acquisition: flock belongs to the open file description, so
        # threads and Store objects in one process exclude each other too.
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + self._lock_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StoreBusy(
                            f"store {self.root} is locked by another writer; retry later"
                        ) from None
                    time.sleep(0.02)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _take_file(self, staged: Path, adapter: Path, rel: str) -> FileEntry:
        dst = adapter / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staged / rel, dst)
        h = hashlib.sha256()
        size = 0
        with open(dst, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
            os.fsync(f.fileno())
        os.chmod(dst, 0o444)  # a reminder, not a guarantee: versions are immutable
        return FileEntry(path=rel, sha256=h.hexdigest(), size=size)

    def _write_ref(self, name: str, tag: str, digest: str) -> None:
        name_dir = self._refs / name
        name_dir.mkdir(exist_ok=True)
        tmp = self._tmp / f"ref-{uuid.uuid4().hex}"
        try:
            _write_new_file(tmp, f"{digest}\n".encode())
            os.replace(tmp, name_dir / tag)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync(name_dir)
        _fsync(self._refs)

    def _read_ref(self, name: str, tag: str) -> str | None:
        try:
            text = (self._refs / name / tag).read_text()
        except (FileNotFoundError, NotADirectoryError):
            return None
        digest = text.strip()
        if not is_digest(digest):
            raise StoreCorrupt(f"ref {name}:{tag} does not hold a digest")
        return digest

    def _read_tags(self, name: str, *, strict: bool) -> dict[str, str]:
        """Tags of ``name``. A corrupt ref raises when ``strict`` (anything that deletes
        must not guess), else it is logged and skipped (listing, start-up)."""
        tags: dict[str, str] = {}
        # Plain str paths and os calls: pathlib objects cost more than the syscalls here.
        name_dir = f"{os.fspath(self._refs)}/{name}"
        try:
            tag_names = sorted(os.listdir(name_dir))
        except (FileNotFoundError, NotADirectoryError):
            return tags
        for tag in tag_names:
            if not NAME_PATTERN.fullmatch(tag):
                continue  # not ours (editor backups, NFS silly-renames)
            try:
                digest = _ref_digest(f"{name_dir}/{tag}", name, tag)
            except StoreCorrupt:
                if strict:
                    raise
                logger.warning("skipping corrupt ref %s:%s", name, tag)
                continue
            if digest is not None:
                tags[tag] = digest
        return tags

    def _all_refs(self, *, strict: bool) -> dict[str, dict[str, str]]:
        refs: dict[str, dict[str, str]] = {}
        for name in os.listdir(self._refs):
            if NAME_PATTERN.fullmatch(name):
                tags = self._read_tags(name, strict=strict)
                if tags:
                    refs[name] = tags
        return refs

    def _referenced(self) -> set[str]:
        return {d for tags in self._all_refs(strict=True).values() for d in tags.values()}

    def _load_manifest(self, digest: str) -> Manifest:
        path = f"{os.fspath(self._versions)}/{digest}/{MANIFEST_FILE}"
        cached = self._manifests.get(digest)
        if cached is not None:
            # One stat: the version still exists and is the one that was read.
            try:
                st = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                st = None
            if st is not None and self._manifest_stamps.get(digest) == _stamp(st):
                return cached
        try:
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            self._manifests.pop(digest, None)
            raise VersionNotFound(f"no stored version {digest}") from None
        try:
            stamp = _stamp(os.fstat(fd))
            with os.fdopen(fd, "rb", closefd=False) as f:
                raw = f.read()
        finally:
            os.close(fd)
        try:
            manifest = Manifest.model_validate_json(raw)
        except ValidationError as exc:
            raise StoreCorrupt(f"manifest of version {digest} is unreadable: {exc}") from exc
        if manifest.digest != digest:
            raise StoreCorrupt(f"version dir {digest} holds the manifest of {manifest.digest}")
        self._manifests[digest] = manifest
        self._manifest_stamps[digest] = stamp
        return manifest

    def _remove_version(self, digest: str) -> None:
        self._manifests.pop(digest, None)
        path = self._versions / digest
        if path.exists():
            self._discard(path, self._versions)
            logger.info("removed version %s", digest)

    def _discard(self, path: Path, parent: Path) -> None:
        """Make ``path`` vanish atomically (rename into tmp/), then delete it at leisure."""
        trash = self._tmp / f"trash-{uuid.uuid4().hex}"
        os.rename(path, trash)
        _fsync(parent)
        shutil.rmtree(trash, ignore_errors=True)


def _ref_digest(path: str, name: str, tag: str) -> str | None:
    """The digest in the ref file at ``path`` (``name:tag``), None if there is none."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        data = os.read(fd, 128)  # a ref is 65 bytes; read on only if something is odd
        if len(data) == 128:
            while chunk := os.read(fd, 1 << 16):
                data += chunk
    except IsADirectoryError:
        raise StoreCorrupt(f"ref {name}:{tag} is a directory, not a ref file") from None
    finally:
        os.close(fd)
    digest = data.decode(errors="replace").strip()
    if not is_digest(digest):
        raise StoreCorrupt(f"ref {name}:{tag} does not hold a digest")
    return digest


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_dev, st.st_ino, st.st_mtime_ns


def _named(manifest: Manifest, name: str) -> Manifest:
    """``manifest`` carrying ``name``; the cached object itself when it already does
    (manifests are frozen, so sharing one is safe)."""
    return manifest if manifest.name == name else manifest.model_copy(update={"name": name})


def _write_new_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: Path) -> None:
    """fsync a directory, so the renames and creations in it survive power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some network filesystems refuse fsync on directories; rename is still atomic.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)
