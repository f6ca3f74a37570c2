"""Reading version manifests through a per-``Store`` cache that one ``stat`` revalidates."""

from __future__ import annotations

import os

from pydantic import ValidationError

from ..errors import StoreCorrupt, VersionNotFound
from ..manifest import Manifest
from .layout import Layout


class ManifestCache:
    """Manifests by digest. Versions are immutable, so a manifest once read stays true
    while its file is the one that was read."""

    def __init__(self, layout: Layout) -> None:
        self._layout = layout
        self._manifests: dict[str, Manifest] = {}
        # (st_dev, st_ino, st_mtime_ns) of each cached manifest file: a version deleted and
        # stored again (new created_at, source) by another process is read afresh.
        self._stamps: dict[str, tuple[int, int, int]] = {}

    def load(self, digest: str) -> Manifest:
        """The manifest of version ``digest``; :class:`VersionNotFound` if it is not
        visible, :class:`StoreCorrupt` if it is unreadable or another version's."""
        path = self._layout.manifest_path(digest)
        cached = self._manifests.get(digest)
        if cached is not None:
            # One stat: the version still exists and is the one that was read.
            try:
                st = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                st = None
            if st is not None and self._stamps.get(digest) == _stamp(st):
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
        self._stamps[digest] = stamp
        return manifest

    def forget(self, digest: str) -> None:
        """Drop ``digest``'s manifest (its version is being removed)."""
        self._manifests.pop(digest, None)


def named(manifest: Manifest, name: str) -> Manifest:
    """``manifest`` carrying ``name``; the cached object itself when it already does
    (manifests are frozen, so sharing one is safe)."""
    return manifest if manifest.name == name else manifest.model_copy(update={"name": name})


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_dev, st.st_ino, st.st_mtime_ns
