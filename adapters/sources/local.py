"""Import an adapter from a directory on this host (or a shared volume).

The files are copied, never linked: a version must not change when someone edits or
deletes the source directory later.

Symlinked *files* are followed, because Hugging Face cache snapshots are symlink farms
into ``blobs/``; their targets must be regular files. Symlinked *directories* are refused
(a link back to an ancestor would otherwise make the walk endless). The caller decides
which directories may be imported at all: this reads any path it is given, so the HTTP
layer must not pass user-chosen paths through unchecked.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from ..admission import AdmissionLimits
from ..errors import PathNotAllowed, SourceNotFound, TooLarge, UnsafePath
from . import CHUNK

logger = logging.getLogger(__name__)



def import_dir(src: Path, dest: Path, limits: AdmissionLimits) -> None:
    """Copy every file under ``src`` into the existing, empty directory ``dest``.

    Raises :class:`TooLarge` past ``limits.max_files`` entries or ``limits.max_total_bytes``
    bytes (counted while copying, so a file growing meanwhile cannot slip past), and
    :class:`UnsafePath` for symlinked directories and anything that is not a regular file.
    """
    if not src.is_dir():
        raise SourceNotFound(f"{src} is not a directory")
    entries = 0
    budget = limits.max_total_bytes
    for dirpath, dirnames, filenames in os.walk(src):
        rel_dir = Path(dirpath).relative_to(src)
        for name in sorted(dirnames):
            entries += 1
            if entries > limits.max_files:
                raise TooLarge(f"{src} has more than {limits.max_files} entries")
            if Path(dirpath, name).is_symlink():
                raise UnsafePath(f"{rel_dir / name} is a symlinked directory")
            (dest / rel_dir / name).mkdir()
        for name in sorted(filenames):
            entries += 1
            if entries > limits.max_files:
                raise TooLarge(f"{src} has more than {limits.max_files} entries")
            budget -= _copy_file(Path(dirpath, name), dest / rel_dir / name, budget, limits)
    logger.info("imported %s (%d entries)", src, entries)


def _copy_file(src: Path, dst: Path, budget: int, limits: AdmissionLimits) -> int:
    # O_NONBLOCK: if the path is (or was swapped for) a fifo, open must not hang; the
    # fstat below then refuses it.
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise UnsafePath(f"cannot open {src.name}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as fin:
        if not stat.S_ISREG(os.fstat(fin.fileno()).st_mode):
            raise UnsafePath(f"{src.name} is not a regular file")
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        copied = 0
        with os.fdopen(out, "wb") as fout:
            while chunk := fin.read(CHUNK):
                copied += len(chunk)
                if copied > budget:
                    raise TooLarge(f"adapter files exceed {limits.max_total_bytes} bytes")
                fout.write(chunk)
    return copied


def check_import_path(raw: str, roots: tuple[Path, ...]) -> Path:
    """The resolved dir ``raw`` names if it lies under one of ``roots``, else
    :class:`PathNotAllowed` (so user-chosen paths can be passed to :func:`import_dir`)."""
    path = Path(raw)
    if not path.is_absolute():
        raise SourceNotFound(f"path must be absolute, got {raw!r}")
    # resolve() collapses '..' and follows every symlink, so the check is on the real place.
    resolved = path.resolve()
    root = next((r for r in roots if resolved.is_relative_to(r)), None)
    if root is None:
        raise PathNotAllowed(f"{raw!r} is not under an import root of this server "
                             "(--import-root)")
    # import_dir follows symlinked files (HF cache snapshots are symlink farms); each
    # target must stay under the root too, or a link would smuggle any file in.
    for dirpath, _, filenames in os.walk(resolved):
        for name in filenames:
            target = Path(dirpath, name).resolve()
            if not target.is_relative_to(root):
                raise PathNotAllowed(f"{raw!r}: {name} links outside the import root")
    return resolved
