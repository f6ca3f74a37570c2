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

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


def default_name(path: Path) -> str:
    """Adapter name from a dir or archive name: ``./sql-writer.tar.gz`` -> ``sql-writer``."""
    name = path.resolve().name
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


@contextlib.contextmanager
def open_archive(path: Path) -> Iterator[IO[bytes]]:
    """An archive of ``path``, positioned at 0: the file itself if it already is one (the
    server sniffs the format), else a fresh tar.gz of the directory."""
    if path.is_file():
        with path.open("rb") as f:
            yield f
        return
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither a directory nor an archive")
    with tempfile.TemporaryFile() as spool:
        with tarfile.open(fileobj=spool, mode="w:gz") as tar:
            _add_dir(tar, path)
        spool.seek(0)
        yield spool


def _add_dir(tar: tarfile.TarFile, root: Path) -> None:
    # Symlinked files are stored as the files they point to: Hugging Face snapshot dirs
    # are symlink farms into blobs/, and the server refuses links in archives.
    # Symlinked dirs are refused here, as the server would (they can loop).
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames):
            if Path(dirpath, name).is_symlink():
                raise OSError(f"{Path(dirpath, name)} is a symlinked directory")
        for name in sorted(filenames):
            file = Path(dirpath, name)
            tar.add(file.resolve(), arcname=file.relative_to(root).as_posix(),
                    recursive=False)
