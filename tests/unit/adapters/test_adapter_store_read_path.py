"""Store read path at scale: one name's entry, manifests re-read when a version is
re-created, stray ref entries skipped by listings."""

from __future__ import annotations

from pathlib import Path

import pytest
from adapter_fixtures import MakeLora
from hotswap.adapters import errors
from hotswap.adapters.admission import AdmissionLimits, BaseModelSpec
from hotswap.adapters.manifest import Manifest
from hotswap.adapters.store import Store


def add(store: Store, src: Path, spec: BaseModelSpec, limits: AdmissionLimits, name: str,
        tag: str = "latest") -> Manifest:
    return store.add(src, name=name, tag=tag, source=f"path:{src}", spec=spec, limits=limits)


def test_entry_is_the_listing_entry_of_one_name(
    tmp_path: Path, store: Store, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    src = make_lora(tmp_path / "v1", rank=2)
    v1 = add(store, src, spec, limits, name="sql")
    add(store, make_lora(tmp_path / "v2", rank=4), spec, limits, name="sql", tag="canary")
    add(store, src, spec, limits, name="other")  # same content: the version of sql
    listed = {e.name: e for e in store.list()}
    assert store.entry("sql") == listed["sql"]
    assert store.entry("other") == listed["other"]
    other = store.entry("other")
    assert other is not None and other.latest is not None
    assert (other.latest.name, other.latest.digest) == ("other", v1.digest)
    assert store.entry("missing") is None
    with pytest.raises(errors.InvalidName):
        store.entry("../refs")


def test_only_tags_without_latest_have_no_latest_manifest(
    tmp_path: Path, store: Store, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    v = add(store, make_lora(tmp_path / "v"), spec, limits, name="sql", tag="canary")
    entry = store.entry("sql")
    assert entry is not None
    assert (dict(entry.tags), entry.latest) == ({"canary": v.digest}, None)


def test_version_deleted_and_stored_again_elsewhere_is_read_afresh(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    reader, writer = Store(tmp_path / "shared"), Store(tmp_path / "shared")
    src = make_lora(tmp_path / "src")
    first = add(writer, src, spec, limits, name="a")
    assert reader.resolve("a").created_at == first.created_at  # now cached in reader
    writer.delete("a")
    assert writer.gc(grace_s=0) == [first.digest]  # no other ref uses it
    again = add(writer, src, spec, limits, name="a")  # same content, same digest, new manifest
    assert again.digest == first.digest and again.created_at != first.created_at
    assert reader.resolve("a").created_at == again.created_at
    assert reader.version(again.digest).created_at == again.created_at


def test_stray_ref_entries_are_skipped_by_listings(
    tmp_path: Path, store: Store, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    add(store, make_lora(tmp_path / "v"), spec, limits, name="ok")
    refs = store.root / "refs"
    (refs / "ok" / "dir-tag").mkdir()  # a directory where a ref file belongs
    (refs / "ok" / ".latest.swp").write_text("editor backup\n")
    (refs / "not-a-dir").write_text("a file where a name dir belongs\n")
    (refs / "bin").mkdir()
    (refs / "bin" / "latest").write_bytes(b"\xff\xfe binary\n")
    assert [(e.name, sorted(e.tags)) for e in store.list()] == [("ok", ["latest"])]
    with pytest.raises(errors.StoreCorrupt):
        store.resolve("ok:dir-tag")
    with pytest.raises(errors.StoreCorrupt):
        store.resolve("bin")
    with pytest.raises(errors.AdapterNotFound):
        store.resolve("not-a-dir")


def test_a_ref_with_trailing_whitespace_still_resolves(
    tmp_path: Path, store: Store, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    v = add(store, make_lora(tmp_path / "v"), spec, limits, name="ok")
    (store.root / "refs" / "ok" / "padded").write_text(v.digest + "\n" + " " * 500 + "\n")
    assert store.resolve("ok:padded").digest == v.digest
