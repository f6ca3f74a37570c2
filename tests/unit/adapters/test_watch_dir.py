"""The watch loop over a local directory: real store, real admission, no engine.

Each ``sync()`` is one pass of the loop (the loop itself only sleeps between passes)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hotswap.adapters.admission import AdmissionLimits, BaseModelSpec
from hotswap.adapters.store import Store
from hotswap.adapters.watch import Watcher, parse_source
from hotswap.adapters.watch.records import WatchRecords
from hotswap.adapters.watch.sources import Candidate, DirSource
from support.fakes import make_adapter_dir

LIMITS = AdmissionLimits(max_lora_rank=8, max_total_bytes=1 << 20, max_files=16)


class CountingDir(DirSource):
    """A DirSource that counts what it fetches (to show replicas share the work)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.fetched: list[str] = []

    def fetch(self, candidate: Candidate, dest: Path, limits: AdmissionLimits) -> str:
        self.fetched.append(f"{candidate.name}:{candidate.tag}")
        return super().fetch(candidate, dest, limits)


class Rig:
    """One "replica": a watcher over ``watched`` into the store at ``store_dir``."""

    def __init__(self, store_dir: Path, watched: Path, spec: BaseModelSpec,
                 source: CountingDir | None = None) -> None:
        self.store = Store(store_dir)
        self.source = source or CountingDir(watched)
        self.removed: list[set[str]] = []

        async def on_removed(digests: set[str]) -> None:
            self.removed.append(digests)

        self.watcher = Watcher(self.store, [self.source], spec=spec, limits=LIMITS,
                               interval_s=1, on_registered=lambda ref: None,
                               on_removed=on_removed)

    def digest(self, ref: str) -> str:
        return self.store.resolve(ref).digest

    def refused(self) -> dict[str, str]:
        return {f"{r.name}:{r.tag}": r.code for r in self.watcher.refusals()}


@pytest.fixture
def watched(tmp_path: Path) -> Path:
    path = tmp_path / "watched"
    path.mkdir()
    return path


@pytest.fixture
def rig(tmp_path: Path, watched: Path, spec: BaseModelSpec) -> Rig:
    return Rig(tmp_path / "store", watched, spec)


def put(watched: Path, rel: str, seed: int, tmp_path: Path, **kw: object) -> None:
    """Write a LoRA for the tiny spec at ``watched/rel`` (replacing what is there)."""
    src = make_adapter_dir(tmp_path / "src" / str(seed), "a", seed=seed, **kw)  # type: ignore[arg-type]
    dst = watched / rel
    shutil.rmtree(dst, ignore_errors=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dst)


async def test_new_changed_and_removed_adapters(rig: Rig, watched: Path,
                                                tmp_path: Path) -> None:
    put(watched, "alpha", 1, tmp_path)
    put(watched, "alpha/canary", 2, tmp_path)  # a tag dir below the name's own files
    await rig.watcher.sync()
    first = rig.digest("alpha")
    assert rig.digest("alpha:canary") != first
    assert rig.store.resolve("alpha").source == f"path:{watched / 'alpha'}"
    assert rig.refused() == {}

    await rig.watcher.sync()  # unchanged: nothing fetched again
    assert sorted(rig.source.fetched) == ["alpha:canary", "alpha:latest"]

    canary = rig.digest("alpha:canary")
    put(watched, "alpha/canary", 2, tmp_path)  # rewritten, same bytes: same version
    new_weights = make_adapter_dir(tmp_path / "src" / "3", "a", seed=3)
    shutil.copy(new_weights / "adapter_model.safetensors", watched / "alpha")
    await rig.watcher.sync()
    assert rig.digest("alpha") != first  # a new version under the same name
    assert rig.digest("alpha:canary") == canary
    assert rig.removed == [{first}]  # the replaced version, for the engine to retire

    shutil.rmtree(watched / "alpha" / "canary")
    await rig.watcher.sync()
    assert rig.store.entry("alpha") is not None
    assert "canary" not in rig.store.entry("alpha").tags  # type: ignore[union-attr]
    assert rig.removed[-1] == {canary}
    shutil.rmtree(watched / "alpha")
    # Nothing left at all: as likely an empty mount point as a decision, so it takes a
    # second listing that agrees.
    await rig.watcher.sync()
    assert rig.store.entry("alpha") is not None
    assert "listed no adapters" in (rig.watcher.states()[0].error or "")
    await rig.watcher.sync()
    assert rig.store.entry("alpha") is None
    assert rig.watcher.states()[0].error is None


async def test_a_broken_adapter_is_listed_and_the_others_serve(rig: Rig, watched: Path,
                                                              tmp_path: Path) -> None:
    put(watched, "good", 1, tmp_path)
    put(watched, "too-big", 2, tmp_path, rank=16)  # over --max-lora-rank 8
    put(watched, "pickled", 3, tmp_path)
    weights = watched / "pickled" / "adapter_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    put(watched, "Bad Name", 4, tmp_path)
    await rig.watcher.sync()
    assert rig.digest("good")
    assert rig.refused() == {"too-big:latest": "rank_too_high",
                             "pickled:latest": "pickle_refused",
                             "Bad Name:latest": "invalid_name"}
    fetched = len(rig.source.fetched)
    await rig.watcher.sync()  # refused for its files: not fetched again until they change
    assert len(rig.source.fetched) == fetched
    assert len(rig.refused()) == 3

    put(watched, "too-big", 5, tmp_path)  # fixed: now it registers
    await rig.watcher.sync()
    assert rig.digest("too-big")
    assert "too-big:latest" not in rig.refused()
    shutil.rmtree(watched / "pickled")  # gone: no longer listed as refused either
    await rig.watcher.sync()
    assert "pickled:latest" not in rig.refused()


async def test_a_change_that_fails_keeps_the_last_good_version(rig: Rig, watched: Path,
                                                               tmp_path: Path) -> None:
    put(watched, "alpha", 1, tmp_path)
    await rig.watcher.sync()
    good = rig.digest("alpha")
    (watched / "alpha" / "adapter_model.safetensors").write_bytes(b"not safetensors")
    await rig.watcher.sync()
    assert rig.digest("alpha") == good
    assert rig.refused()["alpha:latest"] in ("corrupt_weights", "malformed_weights")


async def test_names_held_by_uploads_are_not_taken(rig: Rig, watched: Path,
                                                   tmp_path: Path, spec: BaseModelSpec
                                                   ) -> None:
    uploaded = rig.store.add(make_adapter_dir(tmp_path / "up", "u", seed=9), name="taken",
                             source="upload", spec=spec, limits=LIMITS)
    put(watched, "taken", 1, tmp_path)
    await rig.watcher.sync()
    assert rig.digest("taken") == uploaded.digest
    assert rig.refused() == {"taken:latest": "name_taken"}
    rig.store.delete("taken")  # the operator frees the name: the watched one moves in
    await rig.watcher.sync()
    assert rig.digest("taken") != uploaded.digest
    assert rig.refused() == {}


async def test_replicas_on_one_store_converge_and_fetch_once(tmp_path: Path, watched: Path,
                                                             spec: BaseModelSpec) -> None:
    a = Rig(tmp_path / "store", watched, spec)
    b = Rig(tmp_path / "store", watched, spec)
    put(watched, "alpha", 1, tmp_path)
    await a.watcher.sync()
    await b.watcher.sync()
    assert a.digest("alpha") == b.digest("alpha")
    assert a.source.fetched == ["alpha:latest"] and b.source.fetched == []
    put(watched, "beta", 2, tmp_path)
    shutil.rmtree(watched / "alpha")
    await b.watcher.sync()  # either replica may notice the removal
    await a.watcher.sync()
    assert a.store.entry("alpha") is None and a.digest("beta") == b.digest("beta")
    # A restarted replica finds what it registered from the records: gone stays gone.
    put(watched, "gamma", 3, tmp_path)
    await a.watcher.sync()
    shutil.rmtree(watched / "gamma")
    restarted = Rig(tmp_path / "store", watched, spec)
    await restarted.watcher.sync()
    assert restarted.store.entry("gamma") is None


async def test_an_unlistable_source_keeps_what_it_registered(rig: Rig, watched: Path,
                                                             tmp_path: Path) -> None:
    put(watched, "alpha", 1, tmp_path)
    await rig.watcher.sync()
    moved = watched.with_name("elsewhere")
    watched.rename(moved)  # unmounted, say
    await rig.watcher.sync()
    assert rig.digest("alpha")
    state = rig.watcher.states()[0]
    assert state.error is not None and "gone" in state.error
    moved.rename(watched)
    await rig.watcher.sync()
    assert rig.watcher.states()[0].error is None


class UploadingDir(CountingDir):
    """A source whose fetch is overtaken: an upload lands on the name meanwhile."""

    def __init__(self, root: Path, upload: Callable[[], None]) -> None:
        super().__init__(root)
        self.upload = upload

    def fetch(self, candidate: Candidate, dest: Path, limits: AdmissionLimits) -> str:
        self.upload()
        return super().fetch(candidate, dest, limits)


async def test_an_upload_during_the_fetch_wins(rig: Rig, watched: Path, tmp_path: Path,
                                               spec: BaseModelSpec) -> None:
    put(watched, "alpha", 1, tmp_path)
    await rig.watcher.sync()
    watched_version = rig.digest("alpha")
    put(watched, "alpha", 2, tmp_path)  # changed: the next pass fetches it again
    records = WatchRecords(rig.store.root)
    uploaded: list[str] = []

    def upload() -> None:  # what AdapterService.upload does: add, then forget the record
        m = rig.store.add(make_adapter_dir(tmp_path / "up", "u", seed=9), name="alpha",
                          source="upload", spec=spec, limits=LIMITS)
        records.forget("alpha:latest")
        uploaded.append(m.digest)

    source = UploadingDir(watched, upload)
    rig = Rig(tmp_path / "store", watched, spec, source)  # the same store, a new pass
    await rig.watcher.sync()
    assert rig.digest("alpha") == uploaded[0] != watched_version
    assert rig.refused() == {"alpha:latest": "name_taken"}
    source.upload = lambda: None
    put(watched, "alpha", 3, tmp_path)
    await rig.watcher.sync()  # the name stays the upload's
    assert rig.digest("alpha") == uploaded[0]
    assert rig.refused() == {"alpha:latest": "name_taken"}


def test_parse_source(tmp_path: Path) -> None:
    assert parse_source(str(tmp_path)).id == str(tmp_path.absolute())
    assert parse_source("s3://bucket/some/prefix/").id == "s3://bucket/some/prefix"
    with pytest.raises(ValueError, match="not a directory"):
        parse_source(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="bucket"):
        parse_source("s3://Not_A_Bucket/x")
