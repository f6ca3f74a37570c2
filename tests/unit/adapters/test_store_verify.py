"""Store.verify: every visible version is whole and matches its manifest, every ref points
at a stored version; damage is reported (one line per problem), never repaired."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from adapter_fixtures import MakeLora
from hotswap.adapters.admission import AdmissionLimits, BaseModelSpec
from hotswap.adapters.manifest import Manifest
from hotswap.adapters.store import Store

WEIGHTS = "adapter_model.safetensors"
OTHER_DIGEST = "0" * 64


def add(store: Store, src: Path, spec: BaseModelSpec, limits: AdmissionLimits,
        name: str = "sql", tag: str = "latest") -> Manifest:
    return store.add(src, name=name, tag=tag, source=f"path:{src}", spec=spec, limits=limits)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for dirs): verify must change none."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes())
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def stored(tmp_path: Path, store: Store, spec: BaseModelSpec, limits: AdmissionLimits,
           make_lora: MakeLora) -> Manifest:
    """Two versions: ``sql`` (latest, rank 4) and ``sql:old`` + ``other`` (rank 2)."""
    old = add(store, make_lora(tmp_path / "v1", rank=2), spec, limits)
    store.tag("sql", "old", old.digest)
    add(store, tmp_path / "v1", spec, limits, name="other")
    return add(store, make_lora(tmp_path / "v2", rank=4), spec, limits)


def writable(path: Path) -> Path:
    os.chmod(path, 0o644)  # version files are stored read-only
    return path


def test_empty_and_healthy_stores_verify_clean(store: Store, stored: Manifest) -> None:
    assert Store(store.root / "elsewhere").verify() == []
    before = snapshot(store.root)
    assert store.verify() == []
    assert snapshot(store.root) == before


def test_tampered_file_same_size_is_detected(store: Store, stored: Manifest) -> None:
    weights = writable(store.path(stored) / WEIGHTS)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit in the last tensor: same size, other content
    weights.write_bytes(bytes(data))
    assert store.verify() == [
        f"version {stored.digest}: {WEIGHTS} sha256 differs from manifest"
    ]
    # verify reads afresh: the manifest cache of resolve() does not hide the damage.
    assert store.resolve("sql").digest == stored.digest
    assert len(store.verify()) == 1


def test_truncated_missing_and_extra_files_are_detected(store: Store, stored: Manifest
                                                        ) -> None:
    adapter = store.path(stored)
    weights = writable(adapter / WEIGHTS)
    size = weights.stat().st_size
    with weights.open("r+b") as f:
        f.truncate(size // 2)  # what a crash mid-copy would leave
    (adapter / "adapter_config.json").unlink()
    (adapter / "adapter_model.bin").write_bytes(b"smuggled")
    assert sorted(store.verify()) == sorted([
        f"version {stored.digest}: {WEIGHTS} has {size // 2} bytes, manifest says {size}",
        f"version {stored.digest}: adapter_config.json is missing or unreadable",
        f"version {stored.digest}: adapter_model.bin is not in the manifest",
    ])


def test_version_without_readable_manifest_is_detected(store: Store, stored: Manifest
                                                       ) -> None:
    vdir = store.root / "versions" / stored.digest
    manifest = writable(vdir / "manifest.json")
    manifest.write_text(manifest.read_text()[:100])  # torn write
    problems = store.verify()
    assert problems == [f"version {stored.digest}: no readable manifest.json (ValidationError)"]
    manifest.unlink()  # a version without a manifest does not exist for its refs
    assert store.verify() == [
        f"version {stored.digest}: no readable manifest.json (FileNotFoundError)",
        f"ref sql:latest points at missing version {stored.digest}",
    ]


def test_version_under_a_wrong_digest_is_detected(store: Store, stored: Manifest) -> None:
    shutil.copytree(store.root / "versions" / stored.digest, store.root / "versions" / OTHER_DIGEST)
    assert store.verify() == [
        f"version {OTHER_DIGEST}: its manifest is that of {stored.digest}",
        f"version {OTHER_DIGEST}: content digest of the manifest's files differs",
    ]


def test_manifest_whose_file_list_does_not_match_its_digest_is_detected(
    store: Store, stored: Manifest
) -> None:
    # Files and manifest agree with each other, but not with the name of the version.
    manifest_path = writable(store.root / "versions" / stored.digest / "manifest.json")
    raw = json.loads(manifest_path.read_text())
    raw["files"] = [f for f in raw["files"] if f["path"] != "adapter_config.json"]
    raw["size_bytes"] = sum(f["size"] for f in raw["files"])
    manifest_path.write_text(json.dumps(raw))
    (writable(store.path(stored) / "adapter_config.json")).unlink()
    assert store.verify() == [
        f"version {stored.digest}: content digest of the manifest's files differs"
    ]


def test_refs_at_missing_versions_and_corrupt_refs_are_detected(
    store: Store, stored: Manifest
) -> None:
    refs = store.root / "refs"
    (refs / "ghost").mkdir()
    (refs / "ghost" / "latest").write_text(f"{OTHER_DIGEST}\n")
    (refs / "junk").mkdir()
    (refs / "junk" / "latest").write_text("not a digest\n")
    assert store.verify() == [
        f"ref ghost:latest points at missing version {OTHER_DIGEST}",
        "ref junk:latest does not hold a digest",
    ]
    # A version dir vanished under its refs (what a hand-made `rm -r` would do).
    shutil.rmtree(store.root / "versions" / stored.digest)
    shutil.rmtree(refs / "ghost")
    shutil.rmtree(refs / "junk")
    assert store.verify() == [
        f"ref sql:latest points at missing version {stored.digest}"
    ]


def test_tmp_leftovers_and_foreign_names_are_not_problems(
    tmp_path: Path, store: Store, stored: Manifest, spec: BaseModelSpec,
    limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    # A crashed upload and a crashed commit: invisible, so the store is consistent.
    (store.root / "tmp" / "stage-x").mkdir()
    (store.root / "tmp" / "stage-x" / WEIGHTS).write_bytes(b"\0" * 10)
    shutil.copytree(store.root / "versions" / stored.digest, store.root / "tmp" / "commit-y")
    (store.root / "versions" / ".nfs0001").write_bytes(b"")  # NFS silly-rename
    (store.root / "refs" / "sql" / "latest~").write_text("editor backup")
    assert store.verify() == []
    # Deleting and collecting keep the store consistent.
    store.delete("other")
    store.delete("sql:old")
    assert store.gc() == []  # unreferenced, in their grace period: still consistent
    assert store.verify() == []
    assert store.gc(grace_s=0) != []
    assert store.verify() == []
    store.delete("sql")
    assert store.verify() == []
