"""Pack an adapter directory for upload: a gzipped tar in an anonymous temp file, so a
large adapter is never held in memory, and its size is known before sending."""

from __future__ import annotations

import contextlib
import os
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ..adapters.defaults import DEFAULTS_FILE

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


def default_name(path: Path) -> str:
    """Adapter name from a dir or archive name: ``./sql-writer.tar.gz`` -> ``sql-writer``."""
    name = path.resolve().name
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


@contextlib.contextmanager
def open_archive(path: Path, defaults: Path | None = None) -> Iterator[IO[bytes]]:
    """An archive of ``path``, positioned at 0: the file itself if it already is one (the
    server sniffs the format), else a fresh tar.gz of the directory. ``defaults``: a
    file packed as the adapter's ``hotswap.json`` (in place of the dir's own, if it has
    one; the dir itself is not changed). Only for a directory: an archive is sent as
    it is."""
    if path.is_file():
        if defaults is not None:
            raise ValueError(f"{path} is an archive: task defaults can only be added to "
                             "an adapter directory (or put hotswap.json into the archive)")
        with path.open("rb") as f:
            yield f
        return
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither a directory nor an archive")
    with tempfile.TemporaryFile() as spool:
        with tarfile.open(fileobj=spool, mode="w:gz") as tar:
            _add_dir(tar, path, skip={DEFAULTS_FILE} if defaults is not None else set())
            if defaults is not None:
                tar.add(defaults.resolve(), arcname=DEFAULTS_FILE, recursive=False)
        spool.seek(0)
        yield spool


def _add_dir(tar: tarfile.TarFile, root: Path, skip: set[str]) -> None:
    # Symlinked files are stored as the files they point to: Hugging Face snapshot dirs
    # are symlink farms into blobs/, and the server refuses links in archives.
    # Symlinked dirs are refused here, as the server would (they can loop).
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames):
            if Path(dirpath, name).is_symlink():
                raise OSError(f"{Path(dirpath, name)} is a symlinked directory")
        for name in sorted(filenames):
            file = Path(dirpath, name)
            arcname = file.relative_to(root).as_posix()
            if arcname not in skip:
                tar.add(file.resolve(), arcname=arcname, recursive=False)
