"""Watched sources: directories and S3 prefixes whose adapters register themselves.

``--watch DIR`` / ``--watch s3://bucket/prefix`` (repeatable): every adapter directory
``<name>/`` (or ``<name>/<tag>/``) in the source is admitted and served as ``name[:tag]``,
follows the source as it changes, and goes when it goes. :mod:`.sources` lists a source,
:mod:`.records` remembers which refs a source registered (in the shared store folder),
:mod:`.watcher` runs the loop.
"""

from __future__ import annotations

from pathlib import Path

from ..sources.s3 import SCHEME, S3Ref
from .sources import DirSource, S3Source, WatchSource
from .watcher import Refusal, SourceState, Watcher

__all__ = ["Refusal", "SourceState", "WatchSource", "Watcher", "parse_source"]


def parse_source(value: str) -> WatchSource:
    """An ``s3://`` URL or an existing directory (ValueError otherwise: a flag's error)."""
    if value.startswith(SCHEME):
        try:
            return S3Source(S3Ref.parse(value))
        except Exception as exc:
            raise ValueError(getattr(exc, "message", str(exc))) from None
    # Absolute, not resolved: a symlinked root that is re-pointed (releases/X -> Y) is
    # followed at the next listing.
    path = Path(value).expanduser().absolute()
    if not path.is_dir():
        raise ValueError(f"{value} is not a directory (nor an s3:// URL)")
    return DirSource(path)
