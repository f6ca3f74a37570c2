"""Store.gc: a version's files go only when no ref points at it, nothing here uses it, and
it has been unreferenced for the grace period (other replicas may still use it)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from adapter_fixtures import MakeLora
from hotswap.adapters import errors
from hotswap.adapters.admission import AdmissionLimits, BaseModelSpec
from hotswap.adapters.manifest import Manifest
from hotswap.adapters.store import GC_GRACE_S, Store

GRACE = 100.0


def add(store: Store, src: Path, spec: BaseModelSpec, limits: AdmissionLimits,
        name: str = "sql", tag: str = "latest") -> Manifest:
    return store.add(src, name=name, tag=tag, source=f"path:{src}", spec=spec, limits=limits)


def stored(store: Store) -> set[str]:
    return {p.name for p in (store.root / "versions").iterdir()}


def test_deleted_version_goes_only_past_grace_and_when_not_in_use(
        tmp_path: Path, store: Store, spec: BaseModelSpec, limits: AdmissionLimits,
        make_lora: MakeLora) -> None:
    v = add(store, make_lora(tmp_path / "v"), spec, limits)
    files = store.path(v)
    store.delete("sql")
    with pytest.raises(errors.AdapterNotFound):  # the name is gone at once ...
        store.resolve("sql")
    t0 = time.time()
    assert store.gc(grace_s=GRACE, now=t0) == []  # ... its files are not
    assert store.orphaned() == {v.digest: pytest.approx(t0)}
    assert store.gc(grace_s=GRACE, now=t0 + GRACE - 1) == []  # in grace
    assert store.gc(in_use={v.digest}, grace_s=GRACE, now=t0 + GRACE + 1) == []  # in use
    assert (files / "adapter_model.safetensors").is_file()
    assert store.version(v.digest).digest == v.digest  # still readable by digest
    assert store.gc(grace_s=GRACE, now=t0 + GRACE + 1) == [v.digest]
    assert stored(store) == set() and store.orphaned() == {}
    assert store.verify() == []


def test_the_clock_starts_when_gc_first_finds_it_unreferenced(
        tmp_path: Path, store: Store, spec: BaseModelSpec, limits: AdmissionLimits,
        make_lora: MakeLora) -> None:
    v = add(store, make_lora(tmp_path / "v"), spec, limits)
    store.delete("sql")
    # However late the first gc runs, it only starts the clock (never removes at once).
    assert store.gc(grace_s=GRACE, now=time.time() + 10 * GRACE) == []
    assert v.digest in stored(store)
    assert GC_GRACE_S == 600.0  # the default: see Store.gc's docstring
    assert store.gc() == []


def test_a_ref_written_again_stops_the_clock(
        tmp_path: Path, store: Store, spec: BaseModelSpec, limits: AdmissionLimits,
        make_lora: MakeLora) -> None:
    src = make_lora(tmp_path / "v")
    v = add(store, src, spec, limits)
    store.delete("sql")
    t0 = time.time()
    store.gc(grace_s=GRACE, now=t0)
    store.tag("again", "latest", v.digest)  # referenced again: no longer an orphan
    assert store.orphaned() == {}
    assert store.gc(grace_s=GRACE, now=t0 + 2 * GRACE) == []
    store.delete("again")
    # Unreferenced anew: the grace period counts from now, not from the first time.
    t1 = t0 + 3 * GRACE
    assert store.gc(grace_s=GRACE, now=t1) == []
    assert store.gc(grace_s=GRACE, now=t1 + GRACE - 1) == []
    add(store, src, spec, limits, name="third")  # same content: the same version, reused
    assert store.gc(grace_s=0, now=t1 + 2 * GRACE) == []
    assert store.resolve("third").digest == v.digest


def test_a_version_re_pointed_away_from_is_collected_like_a_deleted_one(
        tmp_path: Path, store: Store, spec: BaseModelSpec, limits: AdmissionLimits,
        make_lora: MakeLora) -> None:
    v1 = add(store, make_lora(tmp_path / "v1", rank=2), spec, limits)
    v2 = add(store, make_lora(tmp_path / "v2", rank=4), spec, limits)  # latest moves
    t0 = time.time()
    assert store.gc(grace_s=GRACE, now=t0) == []
    assert set(store.orphaned()) == {v1.digest}
    assert store.gc(grace_s=GRACE, now=t0 + GRACE) == [v1.digest]
    assert stored(store) == {v2.digest}


def test_replicas_sharing_the_store_share_the_clock(
        tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits,
        make_lora: MakeLora) -> None:
    one, two = Store(tmp_path / "shared"), Store(tmp_path / "shared")
    v = add(one, make_lora(tmp_path / "v"), spec, limits)
    one.delete("sql")
    t0 = time.time()
    assert one.gc(grace_s=GRACE, now=t0) == []  # replica one deleted it: the clock starts
    # Replica two still serves it: it keeps the files whatever one's grace says ...
    assert two.gc(in_use={v.digest}, grace_s=GRACE, now=t0 + GRACE + 1) == []
    assert set(two.orphaned()) == {v.digest}  # ... and does not restart the clock.
    # One does not know two's requests; only the grace period protects them.
    assert one.gc(grace_s=GRACE, now=t0 + GRACE - 1) == []
    assert one.gc(grace_s=GRACE, now=t0 + GRACE + 1) == [v.digest]
    assert two.gc(grace_s=GRACE, now=t0 + GRACE + 2) == []
    with pytest.raises(errors.VersionNotFound):
        two.version(v.digest)


def test_clock_markers_are_crash_safe(
        tmp_path: Path, store: Store, spec: BaseModelSpec, limits: AdmissionLimits,
        make_lora: MakeLora) -> None:
    kept = add(store, make_lora(tmp_path / "k", rank=2), spec, limits, name="kept")
    gone = add(store, make_lora(tmp_path / "g", rank=4), spec, limits, name="gone")
    store.delete("gone")
    t0 = time.time()
    store.gc(grace_s=GRACE, now=t0)
    # A lost marker (a crash before it reached the disk) only restarts the clock.
    os.unlink(store.root / "orphaned" / gone.digest)
    assert store.gc(grace_s=GRACE, now=t0 + GRACE + 1) == []
    assert store.orphaned() == {gone.digest: pytest.approx(t0 + GRACE + 1)}
    # A marker outliving its version (a crash between the two removals), or left on a
    # referenced one, is cleared; foreign names there are ignored.
    (store.root / "orphaned" / ("0" * 64)).touch()
    (store.root / "orphaned" / kept.digest).touch()
    (store.root / "orphaned" / ".nfs0001").touch()
    assert store.gc(grace_s=GRACE, now=t0 + GRACE + 2) == []
    assert set(store.orphaned()) == {gone.digest}
    assert store.verify() == []
    assert store.gc(grace_s=GRACE, now=t0 + 3 * GRACE) == [gone.digest]
    assert stored(store) == {kept.digest}

