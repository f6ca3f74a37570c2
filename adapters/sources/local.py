"""Import an adapter from a directory on this host (or a shared volume).

The files are copied, never linked: a version must not change when someone edits or
deletes the source directory later.

Nothing is checked by path and then used by path, so swapping a file or a directory for
a symlink while an import runs can not make it read anything else: every directory is
opened with ``O_NOFOLLOW`` relative to its parent's descriptor, every file with
``O_NOFOLLOW`` relative to the descriptor of the directory it was listed in, and type
and size are checked on the open descriptor (``fstat``) the bytes are then copied from.

Symlinked *directories* are refused (a link back to an ancestor would make the walk
endless). Symlinked *files* are followed, because Hugging Face cache snapshots are
symlink farms into ``blobs/``:

- below an import root (an :class:`ImportPath`, which :func:`check_import_path` makes of
  a user-chosen path), the link is read relative to its directory's descriptor and its
  target walked again from the root's descriptor, one ``O_NOFOLLOW`` component at a
  time. A target outside the root is :class:`PathNotAllowed`; one through a symlinked
  directory, or a ``..`` after a named component (which only the kernel could resolve
  right), is :class:`UnsafePath`. Chains of file links are followed up to
  :data:`MAX_LINK_HOPS` (a loop ends there).
- from a plain :class:`Path` (``--adapter``, adapterctl's local check: directories the
  operator chose), the kernel follows the link wherever it goes; the target must be a
  regular file.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..admission import AdmissionLimits
from ..errors import PathNotAllowed, SourceNotFound, TooLarge, UnsafePath
from . import CHUNK

logger = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a fifo swapped in must not hang the open (fstat then refuses it);
# O_NOCTTY: opening a terminal must not make it ours.
_ENTRY_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
#: Linux's PATH_MAX: no longer path can be opened in one call anyway.
MAX_PATH_BYTES = 4096
#: Symlinks followed in a row before the import gives up (the kernel's own limit is 40).
MAX_LINK_HOPS = 8
#: Directory levels below the imported dir (each holds a descriptor while walked).
MAX_DEPTH = 16


@dataclass(frozen=True)
class ImportPath:
    """A directory below an import root: the root and the components leading to it,
    each opened with ``O_NOFOLLOW`` when imported (so they still name what was checked)."""

    root: Path
    parts: tuple[str, ...]

    def __str__(self) -> str:
        return str(self.root.joinpath(*self.parts))


def check_import_path(raw: str, roots: tuple[Path, ...]) -> ImportPath:
    """The directory ``raw`` names, if it lies under one of ``roots`` (else
    :class:`PathNotAllowed`); :class:`SourceNotFound` if there is none, and
    :class:`UnsafePath` for a NUL or control character, an over-long path, or a
    symlinked directory (a loop included) below the root."""
    if "\0" in raw:
        raise UnsafePath("the path contains a NUL byte")
    _check_name(raw, "the path")
    if len(raw.encode()) >= MAX_PATH_BYTES:
        raise UnsafePath(f"the path is longer than {MAX_PATH_BYTES - 1} bytes")
    if not PurePosixPath(raw).is_absolute():
        raise SourceNotFound(f"path must be absolute, got {raw!r}")
    # realpath only finds which root and components to walk; the walk itself follows no
    # symlink, so a link swapped in after this line is refused, not followed.
    real = PurePosixPath(os.path.realpath(raw))
    for root in (r.resolve() for r in roots):
        if real.is_relative_to(root):
            break
    else:
        raise PathNotAllowed(f"{raw!r} is not under an import root of this server "
                             "(--import-root)")
    src = ImportPath(root, real.relative_to(root).parts)
    for part in src.parts:
        _check_name(part, f"the path {raw!r}")
    root_fd = _open_root(root)
    try:
        os.close(_open_dirs(root_fd, src.parts, raw))
    finally:
        os.close(root_fd)
    return src


def import_dir(src: Path | ImportPath, dest: Path, limits: AdmissionLimits) -> None:
    """Copy every file under ``src`` into the existing, empty directory ``dest``.

    Raises :class:`TooLarge` past ``limits.max_files`` entries, ``limits.max_total_bytes``
    bytes (checked on each open file, and counted while copying, so a file growing
    meanwhile can not slip past) or :data:`MAX_DEPTH` levels; :class:`UnsafePath` for
    symlinked directories, anything that is not a regular file or directory, and names
    with control characters or not in UTF-8; :class:`PathNotAllowed` for a symlink that
    leaves the import root of an :class:`ImportPath`.
    """
    if isinstance(src, ImportPath):
        root_fd = _open_root(src.root)
        try:
            top = _open_dirs(root_fd, src.parts, str(src))
            try:
                _Copier(limits, root_fd, src.root).copy_dir(top, src.parts, dest, 0)
            finally:
                os.close(top)
        finally:
            os.close(root_fd)
    else:
        try:
            # Follows symlinks in the path itself: the operator chose it.
            top = os.open(src, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise SourceNotFound(f"{src} is not a directory") from exc
        try:
            _Copier(limits, None, None).copy_dir(top, (), dest, 0)
        finally:
            os.close(top)
    logger.info("imported %s", src)


class _Copier:
    """One import's walk: the entry and byte budgets, and how symlinks are followed."""

    def __init__(self, limits: AdmissionLimits, root_fd: int | None, root: Path | None):
        self._limits = limits
        self._root_fd = root_fd  # None: symlinked files are followed by the kernel
        self._root = root
        self._entries = 0
        self._budget = limits.max_total_bytes

    def copy_dir(self, dfd: int, at: tuple[str, ...], dest: Path, depth: int) -> None:
        """Copy the directory open as ``dfd`` (``at``: its components below the root)."""
        if depth > MAX_DEPTH:
            raise TooLarge(f"adapter dirs are nested deeper than {MAX_DEPTH} levels")
        with os.scandir(dfd) as listing:
            entries = sorted(listing, key=lambda e: e.name)
        for entry in entries:
            self._entries += 1
            if self._entries > self._limits.max_files:
                raise TooLarge(f"adapter dir has more than {self._limits.max_files} entries")
            name = entry.name
            _check_name(name, f"the name {name!r}")
            # d_type refuses devices, sockets and fifos before anything opens them; the
            # fstat below is what decides.
            linked = entry.is_symlink()
            if not (linked or entry.is_dir(follow_symlinks=False)
                    or entry.is_file(follow_symlinks=False)):
                raise UnsafePath(f"{name} is not a regular file or directory")
            fd, linked = self._open_entry(dfd, at, name, linked)
            try:
                st = os.fstat(fd)
                if stat.S_ISDIR(st.st_mode) and not linked:
                    (dest / name).mkdir()
                    self.copy_dir(fd, (*at, name), dest / name, depth + 1)
                elif stat.S_ISDIR(st.st_mode):
                    raise UnsafePath(f"{name} is a symlinked directory")
                elif stat.S_ISREG(st.st_mode):
                    self._copy_file(fd, st, dest / name, name)
                else:
                    raise UnsafePath(f"{name} is not a regular file")
            finally:
                os.close(fd)

    def _open_entry(self, dfd: int, at: tuple[str, ...], name: str,
                    linked: bool) -> tuple[int, bool]:
        """The open entry, and whether a symlink led to it."""
        if not linked:
            try:
                return os.open(name, _ENTRY_FLAGS, dir_fd=dfd), False
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise UnsafePath(f"cannot open {name}: {exc.strerror}") from exc
            # ELOOP: swapped for a symlink since it was listed; follow it as one.
        if self._root_fd is None:
            try:
                return os.open(name, _ENTRY_FLAGS & ~os.O_NOFOLLOW, dir_fd=dfd), True
            except OSError as exc:
                raise UnsafePath(f"cannot follow the symlink {name}: {exc.strerror}"
                                 ) from exc
        assert self._root is not None
        return _follow_in_root(self._root_fd, self._root, dfd, at, name), True

    def _copy_file(self, fd: int, st: os.stat_result, dst: Path, name: str) -> None:
        if st.st_size > self._budget:
            raise TooLarge(f"adapter files exceed {self._limits.max_total_bytes} bytes")
        os.set_blocking(fd, True)  # a regular file: O_NONBLOCK has done its job
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(out, "wb") as fout:
            while chunk := os.read(fd, CHUNK):
                self._budget -= len(chunk)
                if self._budget < 0:
                    raise TooLarge(f"adapter files exceed {self._limits.max_total_bytes} "
                                   "bytes")
                fout.write(chunk)
        logger.debug("copied %s (%d bytes)", name, st.st_size)


def _follow_in_root(root_fd: int, root: Path, dfd: int, at: tuple[str, ...],
                    name: str) -> int:
    """Open the file the symlink ``name`` (in ``dfd``, which is ``at`` below the root)
    leads to, walking each target from ``root_fd`` with no directory symlink followed."""
    owned: int | None = None
    try:
        for _ in range(MAX_LINK_HOPS):
            try:
                target = os.readlink(name, dir_fd=dfd)
            except OSError as exc:  # EINVAL: no longer a symlink (swapped meanwhile)
                raise UnsafePath(f"{name} changed while being imported") from exc
            at, name = _target_parts(root, at, target, name)
            if owned is not None:
                os.close(owned)
                owned = None
            dfd = owned = _open_dirs(root_fd, at, target)
            try:
                return os.open(name, _ENTRY_FLAGS, dir_fd=dfd)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise UnsafePath(f"symlink target {target!r}: {exc.strerror}") from exc
            # ELOOP: the target is a symlink too; follow it from where it is.
    finally:
        if owned is not None:
            os.close(owned)
    raise UnsafePath(f"more than {MAX_LINK_HOPS} symlinks in a row (a loop?) at {name}")


def _target_parts(root: Path, at: tuple[str, ...], target: str,
                  name: str) -> tuple[tuple[str, ...], str]:
    """(directory components below the root, file name) of a symlink's ``target``."""
    _check_name(target, f"the symlink target of {name}")
    path = PurePosixPath(target)
    if path.is_absolute():
        if not path.is_relative_to(root):
            raise PathNotAllowed(f"{name} links outside the import root")
        base: list[str] = []
        parts = path.relative_to(root).parts
    else:
        base, parts = list(at), path.parts
    named = False
    for part in parts:
        if part != "..":
            base.append(part)
            named = True
        elif named:
            raise UnsafePath(f"{name}: '..' after a name in its symlink target {target!r}")
        elif not base:
            raise PathNotAllowed(f"{name} links outside the import root")
        else:
            base.pop()
    if not named:
        raise UnsafePath(f"{name} is a symlinked directory")
    return tuple(base[:-1]), base[-1]


def _open_root(root: Path) -> int:
    try:
        # The root itself is the operator's (--import-root): symlinks in it are followed.
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise SourceNotFound(f"import root {root} can not be opened: {exc.strerror}"
                             ) from exc


def _open_dirs(root_fd: int, parts: tuple[str, ...], shown: str) -> int:
    """A new descriptor of the directory ``parts`` below ``root_fd``, no symlink followed."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            try:
                sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                # Linux says ENOTDIR, not ELOOP, for a symlink opened with O_DIRECTORY.
                if exc.errno == errno.ELOOP or _is_symlink(fd, part):
                    raise UnsafePath(f"{shown!r} goes through a symlinked directory "
                                     f"({part})") from exc
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    raise SourceNotFound(f"{shown!r} is not a directory") from exc
                raise UnsafePath(f"{shown!r}: {part}: {exc.strerror}") from exc
            os.close(fd)
            fd = sub
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_symlink(dfd: int, name: str) -> bool:
    """For error messages only (the open already refused): is ``name`` a symlink?"""
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _check_name(text: str, what: str) -> None:
    """:class:`UnsafePath` for control characters and non-UTF-8 bytes: they would end up
    in manifests, logs and error messages (``what``: the text, for the message)."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise UnsafePath(f"{what} contains a control character")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise UnsafePath(f"{what} is not valid UTF-8") from None
