"""Building a version under ``tmp/``: the admitted files and their manifest, all on disk
before one rename publishes the directory."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from ..admission import AdmissionReport, BaseModelSpec
from ..manifest import BaseModelRef, FileEntry, Manifest, content_digest
from .fs import fsync_dir, sha256_and_size, write_new_file
from .layout import ADAPTER_DIR, MANIFEST_FILE


def build_commit(
    commit: Path,
    staged: Path,
    report: AdmissionReport,
    *,
    name: str,
    spec: BaseModelSpec,
    source: str,
) -> Manifest:
    """Move ``report.files`` from ``staged`` into the empty dir ``commit``, write the
    manifest, fsync everything; return the manifest (``commit`` is not yet visible)."""
    os.chmod(commit, 0o755)  # mkdtemp's 0700 would hide it from other users
    adapter = commit / ADAPTER_DIR
    adapter.mkdir()
    files = [_take_file(staged, adapter, rel) for rel in report.files]
    manifest = Manifest(
        name=name,
        digest=content_digest(files),
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
        defaults=report.defaults,
    )
    write_new_file(commit / MANIFEST_FILE, manifest.model_dump_json(indent=2).encode())
    fsync_dir(adapter)
    fsync_dir(commit)
    return manifest


def _take_file(staged: Path, adapter: Path, rel: str) -> FileEntry:
    dst = adapter / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staged / rel, dst)
    with open(dst, "rb") as f:
        sha256, size = sha256_and_size(f)
        os.fsync(f.fileno())
    os.chmod(dst, 0o444)  # a reminder, not a guarantee: versions are immutable
    return FileEntry(path=rel, sha256=sha256, size=size)
