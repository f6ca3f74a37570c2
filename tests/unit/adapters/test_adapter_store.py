"""Store: content addressing, refs and tags, atomic commits, crash recovery, sharing."""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
from adapter_fixtures import MakeLora
from hotswap.adapters import errors
from hotswap.adapters.admission import AdmissionLimits, BaseModelSpec
from hotswap.adapters.manifest import Manifest
from hotswap.adapters.store import Store


def add(
    store: Store,
    src: Path,
    spec: BaseModelSpec,
    limits: AdmissionLimits,
    name: str = "sql",
    tag: str = "latest",
) -> Manifest:
    return store.add(src, name=name, tag=tag, source=f"path:{src}", spec=spec, limits=limits)


def visible(store: Store) -> tuple[list[str], list[str]]:
    """(version dirs, ref files) as another process would see them."""
    versions = sorted(p.name for p in (store.root / "versions").iterdir())
    refs = sorted(str(p.relative_to(store.root / "refs")) for p in (store.root / "refs").rglob("*"))
    return versions, refs


def test_add_then_resolve(
    tmp_path: Path, store: Store, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    src = make_lora(tmp_path / "src", rank=4, modules=("q_proj", "v_proj"))
    manifest = add(store, src, spec, limits)

    assert manifest.name == "sql"
    assert (manifest.peft_type, manifest.rank, manifest.alpha) == ("LORA", 4, 8.0)
    assert manifest.target_modules == ("q_proj", "v_proj")
    assert manifest.base_model.model_id == spec.model_id
    assert manifest.base_model.fingerprint == spec.fingerprint
    assert manifest.source == f"path:{src}"
    assert manifest.created_at.tzinfo is not None
    assert store.resolve("sql") == manifest
    assert store.resolve("sql:latest") == manifest

    path = store.path(manifest)
    assert sorted(os.listdir(path)) == ["adapter_config.json", "adapter_model.safetensors"]
    # The digest is reproducible from the files alone (sha256sum-style lines, sorted).
    lines = "".join(
        f"{hashlib.sha256((path / f).read_bytes()).hexdigest()}  {f}\n"
        for f in sorted(os.listdir(path))
    )
    assert manifest.digest == hashlib.sha256(lines.encode()).hexdigest()
    assert path.parent.name == manifest.digest
    assert manifest.size_bytes == sum((path / f).stat().st_size for f in os.listdir(path))
    # Copied, not linked: the source can change without touching the version.
    assert (src / "adapter_config.json").exists()
    assert not (path / "adapter_config.json").is_symlink()
    assert (path / "adapter_config.json").stat().st_ino != (
        src / "adapter_config.json"
    ).stat().st_ino


def test_same_content_under_two_names_is_one_version(
    tmp_path: Path, store: Store, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    src = make_lora(tmp_path / "src")
    a = add(store, src, spec, limits, name="a")
    b = add(store, src, spec, limits, name="b")
    assert a.digest == b.digest
    assert (store.resolve("a").name, store.resolve("b").name) == ("a", "b")
    versions, _ = visible(store)
    assert versions == [a.digest]


def test_tags_promote_and_roll_back(
    tmp_path: Path, store: Store, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    v1 = add(store, make_lora(tmp_path / "v1", rank=2), spec, limits)
    v2 = add(store, make_lora(tmp_path / "v2", rank=4), spec, limits)
    assert store.resolve("sql").digest == v2.digest  # latest follows the last add

    store.tag("sql", "stable", v1.digest)
    assert store.resolve("sql:stable").digest == v1.digest
    store.tag("sql", "latest", v1.digest)  # roll back
    assert store.resolve("sql").digest == v1.digest
    store.tag("sql", "latest", v2.digest)  # and forward again
    assert store.resolve("sql").digest == v2.digest

    # Adding under another tag leaves latest alone (a canary must not take prod traffic).
    v3 = add(store, make_lora(tmp_path / "v3", rank=8), spec, limits, tag="canary")
    assert store.resolve("sql").digest == v2.digest
    assert store.resolve("sql:canary").digest == v3.digest

    [entry] = store.list()
    assert entry.name == "sql"
    assert dict(entry.tags) == {"latest": v2.digest, "stable": v1.digest, "canary": v3.digest}
    assert entry.latest is not None and entry.latest.digest == v2.digest


def test_tag_unknown_version_is_refused(store: Store) -> None:
    with pytest.raises(errors.VersionNotFound) as info:
        store.tag("sql", "latest", "0" * 64)
    assert info.value.code == "version_not_found"
    with pytest.raises(errors.VersionNotFound):
        store.tag("sql", "latest", "../../etc")


def test_resolve_errors(store: Store) -> None:
    with pytest.raises(errors.AdapterNotFound) as info:
        store.resolve("nope")
    assert info.value.code == "adapter_not_found"
    for bad in ("../x", "Upper", "a:b:c", "", "a:", ".hidden", "x" * 65):
        with pytest.raises(errors.InvalidName):
            store.resolve(bad)


def test_delete_tag_keeps_version_until_gc(
    tmp_path: Path, store: Store, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    v1 = add(store, make_lora(tmp_path / "v1", rank=2), spec, limits, tag="old")
    v2 = add(store, make_lora(tmp_path / "v2", rank=4), spec, limits)
    store.delete("sql:old")
    with pytest.raises(errors.AdapterNotFound):
        store.resolve("sql:old")
    assert store.resolve("sql").digest == v2.digest
    assert (store.root / "versions" / v1.digest).is_dir()  # unreferenced, not yet removed
    assert store.gc() == []  # its grace period has just begun
    assert store.gc(grace_s=0) == [v1.digest]
    assert visible(store)[0] == [v2.digest]
    with pytest.raises(errors.AdapterNotFound):
        store.delete("sql:old")


def test_delete_name_removes_refs_then_gc_the_unshared_versions(
    tmp_path: Path, store: Store, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    shared = make_lora(tmp_path / "shared", rank=2)
    own = make_lora(tmp_path / "own", rank=4)
    s = add(store, shared, spec, limits, name="a", tag="v1")
    o = add(store, own, spec, limits, name="a")
    add(store, shared, spec, limits, name="b")

    store.delete("a")
    with pytest.raises(errors.AdapterNotFound):
        store.resolve("a:v1")
    assert store.resolve("b").digest == s.digest
    versions, refs = visible(store)
    assert o.digest in versions  # files outlive the refs ...
    assert refs == ["b", "b/latest"]
    assert store.gc(grace_s=0) == [o.digest]  # ... until gc
    assert visible(store)[0] == [s.digest]
    assert [e.name for e in store.list()] == ["b"]
    with pytest.raises(errors.AdapterNotFound):
        store.delete("a")


def test_failed_admission_stores_nothing(
    tmp_path: Path, store: Store, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    src = make_lora(tmp_path / "src", rank=16)
    with pytest.raises(errors.RankTooHigh):
        add(store, src, spec, limits)
    assert visible(store) == ([], [])
    assert os.listdir(store.root / "tmp") == []


def test_staging_dir_contents_are_moved_and_cleaned(
    tmp_path: Path, store: Store, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    with store.staging() as staged:
        make_lora(staged)
        (staged / "notes.txt").write_text("dropped")
        manifest = store.add(staged, name="sql", source="upload", spec=spec, limits=limits)
    assert any("notes.txt" in w for w in manifest.warnings)
    assert os.listdir(store.root / "tmp") == []
    assert sorted(os.listdir(store.path(manifest))) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]


def test_exception_mid_commit_leaves_nothing_visible(
    tmp_path: Path,
    store: Store,
    spec: BaseModelSpec,
    limits: AdmissionLimits,
    make_lora: MakeLora,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = make_lora(tmp_path / "src")
    real_rename = os.rename

    def failing_rename(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
        if Path(b).parent.name == "versions":  # the publish step
            raise OSError("injected crash")
        real_rename(a, b)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError, match="injected"):
        add(store, src, spec, limits)
    assert visible(store) == ([], [])
    assert os.listdir(store.root / "tmp") == []


def test_exception_between_version_and_ref_leaves_only_an_orphan(
    tmp_path: Path,
    store: Store,
    spec: BaseModelSpec,
    limits: AdmissionLimits,
    make_lora: MakeLora,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing_write_ref(self: Store, name: str, tag: str, digest: str) -> None:
        raise OSError("injected crash")

    monkeypatch.setattr(Store, "_write_ref", failing_write_ref)
    with pytest.raises(OSError, match="injected"):
        add(store, make_lora(tmp_path / "src"), spec, limits)
    monkeypatch.undo()
    # The version is whole but no name reaches it; only gc removes it.
    [digest] = visible(store)[0]
    assert store.version(digest).digest == digest
    assert store.list() == []
    with pytest.raises(errors.AdapterNotFound):
        store.resolve("sql")
    store.recover()
    assert visible(store)[0] == [digest]
    assert store.gc() == []  # whole but unreferenced: it gets the grace period too
    assert store.gc(grace_s=0) == [digest]


def test_killed_process_mid_commit_leaves_nothing_visible_and_recover_cleans(
    tmp_path: Path,
    store: Store,
    spec: BaseModelSpec,
    limits: AdmissionLimits,
    make_lora: MakeLora,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = make_lora(tmp_path / "src")
    pid = os.fork()
    if pid == 0:  # child: die at the publish rename, with no finally and no cleanup
        try:
            real_rename = os.rename

            def die_on_publish(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
                if Path(b).parent.name == "versions":
                    os._exit(17)
                real_rename(a, b)

            monkeypatch.setattr(os, "rename", die_on_publish)
            add(Store(store.root), src, spec, limits)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 17
    assert visible(store) == ([], [])
    leftovers = os.listdir(store.root / "tmp")
    assert leftovers  # staging and commit dirs the dead process never cleaned

    young = Store(store.root)  # default grace: another replica may still be writing
    young.recover()
    assert os.listdir(store.root / "tmp") == leftovers
    Store(store.root, tmp_grace=0).recover()
    assert os.listdir(store.root / "tmp") == []
    assert visible(store) == ([], [])


def test_recover_removes_only_old_tmp_entries(store: Store) -> None:
    tmp = store.root / "tmp"
    (tmp / "stage-old").mkdir()
    (tmp / "stage-old" / "f").write_text("x")
    (tmp / "ref-old").write_text("x")
    (tmp / "stage-new").mkdir()
    old = time.time() - 7200
    for p in ("stage-old", "ref-old"):
        os.utime(tmp / p, (old, old))
    store.recover()
    assert os.listdir(tmp) == ["stage-new"]


def test_two_store_objects_see_each_others_writes(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    one, two = Store(tmp_path / "shared"), Store(tmp_path / "shared")
    v1 = add(one, make_lora(tmp_path / "v1", rank=2), spec, limits)
    assert two.resolve("sql").digest == v1.digest
    v2 = add(two, make_lora(tmp_path / "v2", rank=4), spec, limits)
    assert one.resolve("sql").digest == v2.digest
    one.tag("sql", "latest", v1.digest)
    assert two.resolve("sql").digest == v1.digest
    two.delete("sql")
    with pytest.raises(errors.AdapterNotFound):
        one.resolve("sql")
    assert one.list() == []


def test_concurrent_adds_from_several_store_objects(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    root = tmp_path / "shared"
    sources = [make_lora(tmp_path / f"src{i}", rank=1 + i % 2) for i in range(6)]
    failures: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            add(Store(root), sources[i], spec, limits, name=f"n{i % 3}", tag=f"t{i}")
        except BaseException as exc:  # surfaced below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    store = Store(root)
    assert [e.name for e in store.list()] == ["n0", "n1", "n2"]
    assert len(visible(store)[0]) == 2  # two distinct contents (rank 1 and rank 2)
    assert os.listdir(root / "tmp") == []


def test_lock_timeout_raises_store_busy(store: Store) -> None:
    fd = os.open(store.root / "lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        busy = Store(store.root, lock_timeout=0.1)
        with pytest.raises(errors.StoreBusy) as info:
            busy.gc()
        assert info.value.code == "store_busy"
    finally:
        os.close(fd)


def test_add_refuses_bad_name_and_source(
    tmp_path: Path, store: Store, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    src = make_lora(tmp_path / "src")
    with pytest.raises(errors.InvalidName):
        add(store, src, spec, limits, name="../escape")
    with pytest.raises(errors.InvalidName):
        add(store, src, spec, limits, tag="a/b")
    with pytest.raises(ValueError, match="source"):
        store.add(src, name="ok", source="ftp://x", spec=spec, limits=limits)
    assert visible(store) == ([], [])


def test_corrupt_ref_is_reported_not_guessed(
    tmp_path: Path, store: Store, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    add(store, make_lora(tmp_path / "src"), spec, limits, name="ok")
    (store.root / "refs" / "sql").mkdir()
    (store.root / "refs" / "sql" / "latest").write_text("not a digest\n")
    with pytest.raises(errors.StoreCorrupt) as info:
        store.resolve("sql")
    assert info.value.code == "store_corrupt"
    # Reading and start-up skip it; anything that deletes refuses to guess.
    assert [e.name for e in store.list()] == ["ok"]
    store.recover()
    with pytest.raises(errors.StoreCorrupt):
        store.gc()
    assert store.resolve("ok").name == "ok"


def test_version_files_are_read_only(
    tmp_path: Path, store: Store, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    manifest = add(store, make_lora(tmp_path / "src"), spec, limits)
    mode = (store.path(manifest) / "adapter_model.safetensors").stat().st_mode
    assert mode & 0o222 == 0
