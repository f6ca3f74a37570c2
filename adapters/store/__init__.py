"""Content-addressed adapter store on a local or shared folder.

Layout under ``root`` (:mod:`.layout`)::

    versions/<digest>/manifest.json    immutable once visible
    versions/<digest>/adapter/...      the adapter files (what the engine loads)
    refs/<name>/<tag>                  one line: the digest ("latest" is the default tag)
    orphaned/<digest>                  empty; mtime: since when no ref points at it
    tmp/                               staging, commits in progress, trash
    lock                               fcntl.flock target for writers

Crash safety comes from building everything under ``tmp/`` (same filesystem) and making
it visible with one ``rename``: a version dir appears whole with its manifest
(:mod:`.commit`), a ref file is replaced whole (:mod:`.refs`). A crash leaves at most
unreferenced entries in ``tmp/`` (removed by :meth:`Store.recover` after a grace period)
or a complete version no ref points to yet (removed only by :meth:`Store.gc`).

A full disk is a failure like any other on that path: the writing methods turn ENOSPC /
EDQUOT into :class:`~hotswap.adapters.errors.DiskFull` (507 over HTTP), and what a
failed write leaves behind is either removed on the way out (staging and commit dirs,
temporary ref files) or an unreferenced version for :meth:`Store.gc`; nothing partial is
ever visible, and the same write works once there is room.

Files outlive their refs: deleting a name removes its refs at once, but a version's
files go only when :meth:`Store.gc` finds it unreferenced for a grace period
(:mod:`.orphans`) and not in use by the calling process, since requests and engines
(here or on other replicas) may still read them.

Concurrency: several processes (server replicas) may share the folder. Writers take an
exclusive ``flock`` on ``lock`` for the short publish step only (:mod:`.lock`); admission
and hashing run before it. Readers take no lock: every visible file is complete.
``flock`` (not ``lockf``) so two ``Store`` objects in one process also exclude each
other; on Linux NFS it is mapped to POSIX byte-range locks and works across hosts.

:class:`Store` (:mod:`.store`) is the one entry point; :mod:`.manifests` caches what it
reads, :mod:`.verify` re-checks a folder from its bytes, :mod:`.fs` holds the fsync and
atomic-create steps everything above relies on.
"""

from .layout import ADAPTER_DIR, MANIFEST_FILE
from .store import GC_GRACE_S, AdapterEntry, Store

__all__ = ["ADAPTER_DIR", "GC_GRACE_S", "MANIFEST_FILE", "AdapterEntry", "Store"]
