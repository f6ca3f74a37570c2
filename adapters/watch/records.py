"""Which ``name:tag`` refs a watched source registered, beside the store's own layout.

A watcher must tell the refs it owns (and may re-point or remove as its source changes)
from uploads and hand-made tags under the same names, across restarts and across
replicas sharing the store. The version's manifest can not say: the store is
content-addressed, so the same bytes uploaded earlier keep the manifest of the upload.
So each registration leaves a record in the store folder::

    watch/<name>@<tag>    {"source": "<watched source>", "digest": "...", "fingerprint": "..."}

``digest`` is None while a registration is under way (written before the ref moves, so a
replica that sees the new ref also sees whose it is; a registration that fails puts the
record it found back). ``fingerprint`` is what the source
listed (ETags, sizes, mtimes): a replica that finds its source unchanged since another
registered it fetches nothing. An upload, tag or delete through the API forgets the
record, so a name taken over by hand is never moved by a watcher again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..manifest import is_digest
from ..names import parse_ref

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchRecord:
    name: str
    tag: str
    source: str
    digest: str | None
    fingerprint: str


class WatchRecords:
    """The ``watch/`` records of one store folder (shared by every replica using it)."""

    def __init__(self, store_root: Path) -> None:
        self._dir = store_root / "watch"
        self._tmp = store_root / "tmp"
        self._dir.mkdir(parents=True, exist_ok=True)

    def get(self, name: str, tag: str) -> WatchRecord | None:
        return self._read(self._path(name, tag))

    def owned_by(self, source: str) -> dict[tuple[str, str], WatchRecord]:
        """Every record of ``source``, by (name, tag)."""
        out = {}
        for path in self._dir.iterdir():
            record = self._read(path)
            if record is not None and record.source == source:
                out[(record.name, record.tag)] = record
        return out

    def write(self, record: WatchRecord) -> None:
        """Replace the record of ``record.name:record.tag`` at once (rename over it)."""
        tmp = self._tmp / f"watch-{uuid.uuid4().hex}"
        tmp.write_text(json.dumps({"source": record.source, "digest": record.digest,
                                   "fingerprint": record.fingerprint}))
        os.replace(tmp, self._path(record.name, record.tag))

    def forget(self, ref: str) -> None:
        """Drop the records of ``name`` (all tags) or ``name:tag``."""
        parsed = parse_ref(ref)
        for path in list(self._dir.glob(f"{parsed.name}@*")):
            if parsed.tag is None or path.name == f"{parsed.name}@{parsed.tag}":
                path.unlink(missing_ok=True)

    def forget_if(self, record: WatchRecord) -> None:
        """Drop ``record`` only if it is still the one on disk (not re-written since)."""
        self.restore_if(record, None)

    def restore_if(self, record: WatchRecord, previous: WatchRecord | None) -> None:
        """Put ``previous`` back (None: no record) if ``record`` is still the one on disk:
        a registration that failed leaves ownership as it found it."""
        if self.get(record.name, record.tag) != record:
            return  # re-written (another replica) or forgotten (taken over by hand)
        if previous is None:
            self._path(record.name, record.tag).unlink(missing_ok=True)
        else:
            self.write(previous)

    def _path(self, name: str, tag: str) -> Path:
        return self._dir / f"{name}@{tag}"

    def _read(self, path: Path) -> WatchRecord | None:
        name, sep, tag = path.name.partition("@")
        if not sep:
            return None
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            logger.warning("ignoring unreadable watch record %s", path.name)
            return None
        with contextlib.suppress(KeyError, TypeError):
            digest = data["digest"]
            if isinstance(data["source"], str) and isinstance(data["fingerprint"], str) and (
                    digest is None or (isinstance(digest, str) and is_digest(digest))):
                return WatchRecord(name, tag, data["source"], digest, data["fingerprint"])
        logger.warning("ignoring malformed watch record %s", path.name)
        return None
