"""What a watched source holds: a local directory or an S3 prefix, listed as adapters.

Layout, the same for both::

    <root>/<name>/adapter_config.json, adapter_model.safetensors[, hotswap.json]
        -> registered as name (name:latest)
    <root>/<name>/<tag>/...
        -> registered as name:tag

A level is an adapter if it holds ``adapter_config.json`` or weights (safetensors or
pickle: a pickle-only one is listed, so its refusal is shown, not silently skipped).
Listing is cheap (one ``list_objects_v2`` walk, one ``scandir`` per level); the
``fingerprint`` of a level (ETags; sizes and mtimes) tells a changed adapter from one
already registered without fetching a byte.
"""

from __future__ import annotations

import hashlib
import os
import stat
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..admission import CONFIG_FILE, PICKLE_SUFFIXES, AdmissionLimits
from ..errors import SourceNotFound, TooLarge, UnsafePath
from ..names import DEFAULT_TAG
from ..sources import CHUNK, s3
from ..sources.selection import ADAPTER_FILES, select

#: Objects (or directory entries) one scan may list before it gives up on the source.
MAX_SCAN_ENTRIES = 100_000


@dataclass(frozen=True)
class Candidate:
    """One adapter level found by a scan: ``files`` maps file name -> size."""

    name: str  # as found: validated when registered, so a bad one is listed as refused
    tag: str
    where: str  # for messages and logs: the level's dir or s3:// URL
    files: dict[str, int]
    fingerprint: str
    #: The source's own handle of the level (an S3 listing, a path).
    handle: Any


def is_adapter_file(name: str) -> bool:
    """What makes a level an adapter, and what its fingerprint covers: a change to a
    README or a training log beside the adapter fetches nothing."""
    return name in ADAPTER_FILES or PurePosixPath(name).suffix.lower() in (
        ".safetensors", *PICKLE_SUFFIXES)


def is_adapter_level(names: list[str]) -> bool:
    return CONFIG_FILE in names or any(is_adapter_file(n) for n in names)


def fingerprint(parts: list[tuple[str, ...]]) -> str:
    kept = sorted(p for p in parts if is_adapter_file(p[0]))
    return hashlib.sha256(repr(kept).encode()).hexdigest()[:32]


class WatchSource(ABC):
    """One ``--watch`` source. ``id`` names it in records and listings."""

    id: str
    #: The ``source`` label of its load-time metrics.
    kind: str

    @abstractmethod
    def scan(self) -> dict[tuple[str, str], Candidate]:
        """Every adapter level now, by (name, tag). Raises if the source can not be
        listed (then nothing is unregistered: the last good state stays)."""

    @abstractmethod
    def fetch(self, candidate: Candidate, dest: Path, limits: AdmissionLimits) -> str:
        """Copy the adapter's files into the empty dir ``dest``; return its source."""

    @property
    def shown(self) -> str:
        """The source as API listings show it (server paths stay private)."""
        return self.id


class S3Source(WatchSource):
    kind = "s3"

    def __init__(self, ref: s3.S3Ref) -> None:
        self.ref = ref
        self.id = str(ref).rstrip("/")

    def scan(self) -> dict[tuple[str, str], Candidate]:
        # (name, None): <name>/<file>; (name, tag): <name>/<tag>/<file>.
        levels: dict[tuple[str, str | None], dict[str, s3.S3Object]] = {}
        base = f"{self.ref.prefix}/" if self.ref.prefix else ""
        for obj in s3.list_tree(s3.client(), self.ref, MAX_SCAN_ENTRIES):
            parts = obj.key[len(base):].split("/")
            if len(parts) == 2:
                levels.setdefault((parts[0], None), {})[parts[1]] = obj
            elif len(parts) == 3:
                levels.setdefault((parts[0], parts[1]), {})[parts[2]] = obj
        out = {}
        # Name levels first: a tag dir literally called "latest" wins over them.
        for (name, tag), level in sorted(levels.items(), key=lambda kv: kv[0][1] is not None):
            if is_adapter_level(list(level)):
                ref = self.ref.child(name, tag or "")
                out[(name, tag or DEFAULT_TAG)] = Candidate(
                    name, tag or DEFAULT_TAG, str(ref), {n: o.size for n, o in level.items()},
                    fingerprint([(n, o.etag, str(o.size)) for n, o in level.items()]),
                    (ref, level))
        return out

    def fetch(self, candidate: Candidate, dest: Path, limits: AdmissionLimits) -> str:
        ref, level = candidate.handle
        return s3.fetch(s3.client(), ref, level, dest, limits)


class DirSource(WatchSource):
    kind = "path"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.id = str(root)

    @property
    def shown(self) -> str:
        return "path"

    def scan(self) -> dict[tuple[str, str], Candidate]:
        if not self.root.is_dir():
            raise SourceNotFound(f"watched directory {self.root} is gone")
        out: dict[tuple[str, str], Candidate] = {}
        budget = [MAX_SCAN_ENTRIES]
        for name, path in _level(self.root, budget)[1]:
            files, subdirs = _level(path, budget)
            if is_adapter_level(list(files)):
                out[(name, DEFAULT_TAG)] = self._candidate(name, DEFAULT_TAG, path, files)
            for tag, tag_path in subdirs:
                tag_files, _ = _level(tag_path, budget)
                if is_adapter_level(list(tag_files)):
                    out[(name, tag)] = self._candidate(name, tag, tag_path, tag_files)
        return out

    def _candidate(self, name: str, tag: str, path: Path,
                   files: dict[str, os.stat_result]) -> Candidate:
        # Messages name the level below the watched dir, not the server's path.
        where = f"watched dir: {path.relative_to(self.root)}/"
        return Candidate(name, tag, where, {n: st.st_size for n, st in files.items()},
                         fingerprint([(n, str(st.st_size), str(st.st_mtime_ns))
                                      for n, st in files.items()]), path)

    def fetch(self, candidate: Candidate, dest: Path, limits: AdmissionLimits) -> str:
        path: Path = candidate.handle
        budget = limits.max_total_bytes
        for name in select(candidate.files, candidate.where, limits):
            budget -= _copy(path / name, dest / name, budget)
        return f"path:{path}"


def _level(path: Path, budget: list[int]
           ) -> tuple[dict[str, os.stat_result], list[tuple[str, Path]]]:
    """Regular files (name -> stat) and subdirectories of ``path``; symlinks followed
    (the operator chose the directory, as with ``--adapter``). A directory that can not
    be read raises (the scan fails and unregisters nothing): an I/O error or a lost
    permission is not an adapter removed."""
    files: dict[str, os.stat_result] = {}
    dirs: list[tuple[str, Path]] = []
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except FileNotFoundError:
        return files, dirs  # removed since its parent was listed: gone, truly
    for entry in entries:
        budget[0] -= 1
        if budget[0] < 0:
            raise TooLarge(f"watched directory holds more than {MAX_SCAN_ENTRIES} entries")
        try:
            st = entry.stat()
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and not entry.name.startswith("."):
            dirs.append((entry.name, Path(entry.path)))
        elif stat.S_ISREG(st.st_mode):
            files[entry.name] = st
    return files, dirs


def _copy(src: Path, dst: Path, budget: int) -> int:
    """Copy one regular file, refusing more than ``budget`` bytes; return its size."""
    fd = os.open(src, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafePath(f"{src.name} is not a regular file")
        os.set_blocking(fd, True)
        copied = 0
        with dst.open("xb") as out:
            while chunk := os.read(fd, CHUNK):
                copied += len(chunk)
                if copied > budget:
                    raise TooLarge(f"adapter files exceed the size cap at {src.name}")
                out.write(chunk)
        return copied
    finally:
        os.close(fd)
