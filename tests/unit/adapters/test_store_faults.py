"""Store faults through the service API: a full disk during an upload or a pull, a hub
download cut mid-file, kill -9 during a hub pull.

The disk is a real tmpfs a few hundred KiB large (we run as root; a mount that fails
fails the test, it never skips), filled by a ``filler`` file beside the store, so every
ENOSPC below comes from the kernel at the write that hit it. Where a fault must land at
one exact step (the manifest, the ref), the step is wrapped to fill the disk right
before it runs. After every fault: no partial adapter is visible (listing, refs,
``Store.verify``, ``hub/`` records), nothing of it stays in ``tmp/``, the adapter stored
before still resolves with its files, and once space is freed the same request works.
Moving a tag on a full disk fails the same way; deleting and collecting, which is how an
operator frees space, need no free byte.

Kill -9 during an upload is tests/integration/test_store_crash.py (a real server) and
tests/unit/adapters/test_adapter_store.py (at the publish rename); here a forked child
dies mid-download and at the publish step of a pull.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hotswap.adapters import errors
from hotswap.adapters.hub_cache import HubCache
from hotswap.adapters.pulls import HubPuller
from hotswap.adapters.service import AdapterService
from hotswap.adapters.sources.hub import HubRef
from hotswap.adapters.store import Store
from hotswap.adapters.store import store as store_module
from support import small_disk
from support.fake_hub import FakeHub
from support.fakes import LIMITS, TINY_SPEC, make_adapter_dir, tar_gz
from support.small_disk import ALL_MODULES, NAME, PAGE, REPO, fill, free, free_bytes

# --- the service on a small real disk ----------------------------------------------------


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk.mounted(tmp_path / "disk") as mnt:
        yield mnt


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[FakeHub]:
    with small_disk.big_hub(tmp_path / "hub-src", seed=21) as fake:
        yield fake


@pytest.fixture
async def service(disk: Path, hub: FakeHub) -> AsyncIterator[AdapterService]:
    svc = await AdapterService.open(small_disk.options_on(disk, hub))
    yield svc


@pytest.fixture
def big(tmp_path: Path) -> bytes:
    return small_disk.big_archive(tmp_path / "src", seed=22)


async def body(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 1 << 14):
        yield data[i : i + (1 << 14)]


async def store_other(service: AdapterService, tmp_path: Path) -> str:
    """Upload ``other`` (while there is room); return its digest."""
    small = tar_gz(make_adapter_dir(tmp_path / "src", "other", seed=23))
    digest: str = (await service.upload(body(small), "other", "latest")).digest
    return digest


def assert_untouched(root: Path, other: str) -> None:
    """Only ``other`` is visible, consistent and loadable; nothing is left in tmp/."""
    reader = Store(root)
    assert {e.name: dict(e.tags) for e in reader.list()} == {"other": {"latest": other}}
    assert sorted(p.relative_to(root / "refs").as_posix()
                  for p in (root / "refs").rglob("*") if p.is_file()) == ["other/latest"]
    assert reader.verify() == []
    assert os.listdir(root / "tmp") == []
    assert os.listdir(root / "hub") == []
    manifest = reader.resolve("other")
    files = reader.path(manifest)
    assert all((files / f.path).stat().st_size == f.size for f in manifest.files)


def assert_disk_full(exc: pytest.ExceptionInfo[errors.StoreFull]) -> None:
    assert isinstance(exc.value, errors.DiskFull)
    assert exc.value.code == "insufficient_storage"
    assert "out of space" in exc.value.message and "/" not in exc.value.message  # no paths


def fill_before(monkeypatch: pytest.MonkeyPatch, disk: Path, owner: Any, attr: str) -> None:
    """Make ``owner.attr`` fill the disk to the last byte, then run."""
    real: Callable[..., Any] = getattr(owner, attr)

    def filled_then(*args: Any, **kwargs: Any) -> Any:
        fill(disk)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, attr, filled_then)


# --- upload -------------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["spool", "extract", "manifest", "ref"])
async def test_upload_on_a_full_disk_is_disk_full_and_stores_nothing(
        service: AdapterService, disk: Path, tmp_path: Path, big: bytes, step: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    root = disk / "store"
    other = await store_other(service, tmp_path)
    if step == "spool":  # the archive does not fit
        fill(disk, leave=len(big) // 2)
    elif step == "extract":  # the archive fits, its files beside it do not
        fill(disk, leave=len(big) + 4 * PAGE)
    elif step == "manifest":  # files moved into the commit dir; its manifest can't be written
        fill_before(monkeypatch, disk, store_module, "build_commit")
    else:  # the version is published; the ref can't be written
        fill_before(monkeypatch, disk, Store, "_write_ref")
    with pytest.raises(errors.StoreFull) as exc:
        await service.upload(body(big), "big", "latest")
    assert_disk_full(exc)
    monkeypatch.undo()
    if step == "ref":  # a whole version no ref points at: invisible, and gc takes it
        assert len(os.listdir(root / "versions")) == 2
        assert Store(root).gc(grace_s=0) != []
    assert_untouched(root, other)

    free(disk)
    stored = await service.upload(body(big), "big", "latest")
    assert Store(root).resolve("big").digest == stored.digest
    assert Store(root).verify() == []
    assert os.listdir(root / "tmp") == []


async def test_import_on_a_full_disk_is_disk_full(service: AdapterService, disk: Path,
                                                  tmp_path: Path) -> None:
    other = await store_other(service, tmp_path)
    src = make_adapter_dir(tmp_path / "src", "local", rank=8, modules=ALL_MODULES, seed=24)
    fill(disk, leave=PAGE)
    with pytest.raises(errors.StoreFull) as exc:
        await service.import_dir("local", src)
    assert_disk_full(exc)
    assert_untouched(disk / "store", other)
    free(disk)
    assert (await service.import_dir("local", src)).name == "local"


async def test_on_a_full_disk_tags_fail_cleanly_and_deletes_free_space(
        service: AdapterService, disk: Path, tmp_path: Path, big: bytes) -> None:
    root = disk / "store"
    other = await store_other(service, tmp_path)
    fill(disk)
    with pytest.raises(errors.StoreFull) as exc:
        await service.tag("other", "stable", other)
    assert_disk_full(exc)
    assert_untouched(root, other)
    # What an operator does about it needs no free byte: delete, then collect.
    await service.delete("other")
    assert Store(root).gc(grace_s=0) == [other]
    assert free_bytes(disk) > 0
    assert Store(root).list() == [] and Store(root).verify() == []
    free(disk)
    await service.upload(body(big), "big", "latest")


def test_other_os_errors_are_not_disk_full() -> None:
    with pytest.raises(PermissionError), errors.disk_full_errors("testing"):
        raise PermissionError(errno.EACCES, "denied")
    with pytest.raises(errors.DiskFull, match="over its quota"), \
            errors.disk_full_errors("testing"):
        raise OSError(errno.EDQUOT, "quota")


# --- hub pulls ----------------------------------------------------------------------------


async def test_pull_on_a_full_disk_is_disk_full_and_stores_nothing(
        service: AdapterService, disk: Path, tmp_path: Path, hub: FakeHub) -> None:
    other = await store_other(service, tmp_path)
    fill(disk, leave=8 * PAGE)  # the config fits, the weights (90 KiB) do not
    with pytest.raises(errors.StoreFull) as exc:
        await service.pull(HubRef.parse(REPO))
    assert_disk_full(exc)
    assert hub.downloads[REPO] > 0  # it failed writing, not before
    assert_untouched(disk / "store", other)
    with pytest.raises(errors.AdapterNotFound):
        await service.resolve(NAME)

    free(disk)
    pulled = await service.pull(HubRef.parse(REPO))
    assert (await service.resolve(REPO)).digest == pulled.digest  # recorded as a pull


async def test_disk_filling_right_after_publish_still_records_the_pull(
        service: AdapterService, disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The ref moved; a record needing a fresh block now would fail, leaving a ref the
    # client was told failed and that no record claims. Its space was taken up front.
    store = service._store
    real_add = store.add

    def add_then_fill(*args: Any, **kwargs: Any) -> Any:
        manifest = real_add(*args, **kwargs)
        fill(disk)
        return manifest

    monkeypatch.setattr(store, "add", add_then_fill)
    pulled = await service.pull(HubRef.parse(REPO))
    assert free_bytes(disk) == 0
    assert (await service.resolve(REPO)).digest == pulled.digest
    assert os.listdir(disk / "store" / "tmp") == []
    assert Store(disk / "store").verify() == []


@pytest.fixture
def no_resume_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    small_disk.skip_resume_pauses(monkeypatch)


async def test_download_cut_mid_file_is_hub_unavailable_and_stores_nothing(
        service: AdapterService, disk: Path, tmp_path: Path, hub: FakeHub,
        no_resume_pause: None) -> None:
    other = await store_other(service, tmp_path)
    hub.truncate.add((REPO, "adapter_model.safetensors"))
    with pytest.raises(errors.HubUnavailable, match=r"failed|incomplete"):
        await service.pull(HubRef.parse(REPO))
    assert_untouched(disk / "store", other)
    hub.truncate.clear()
    await service.pull(HubRef.parse(REPO))
    assert Store(disk / "store").verify() == []


# --- kill -9 during a pull ---------------------------------------------------------------


def downloading(hub: FakeHub, tmp: Path) -> bool:
    """Whether the hub sent half the weights and holds the rest back, while huggingface_hub
    waits for it with its partial file open in a staging dir (it writes 10 MiB chunks:
    the half it has is still in its buffer)."""
    return hub.stalled.is_set() and any(tmp.glob("stage-*/**/*.incomplete"))


def published_soon(tmp: Path) -> bool:
    """Whether a complete commit dir waits to be renamed into versions/."""
    return any(tmp.glob("commit-*/manifest.json"))


@contextmanager
def lock_held(root: Path) -> Iterator[None]:
    """Hold the store's writer lock, as another replica publishing would."""
    fd = os.open(root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        os.close(fd)


@pytest.mark.parametrize("point", ["mid-download", "at-publish"])
def test_kill_9_during_a_pull_leaves_nothing_visible(tmp_path: Path, hub: FakeHub,
                                                     point: str) -> None:
    root = tmp_path / "store"
    store = Store(root)
    other = store.add(make_adapter_dir(tmp_path / "src", "other", seed=25), name="other",
                      source="upload", spec=TINY_SPEC, limits=LIMITS).digest
    puller = HubPuller(store, HubCache(root), LIMITS, budget=None, token=None,
                       endpoint=hub.url, collect=lambda: _never())
    reached: Callable[[Path], bool]
    with ExitStack() as stack:
        if point == "mid-download":
            hub.stall.add((REPO, "adapter_model.safetensors"))
            reached = partial(downloading, hub)
        else:  # another writer holds the lock: the pull waits with its commit dir complete
            stack.enter_context(lock_held(root))
            reached = published_soon
        pid = os.fork()
        if pid == 0:  # child: pull, and be killed before it returns (no cleanup runs)
            try:
                puller.fetch(HubRef.parse(REPO), NAME, "latest", TINY_SPEC)
            finally:
                os._exit(1)
        deadline = time.monotonic() + 30
        while not reached(root / "tmp"):
            if time.monotonic() > deadline or os.waitpid(pid, os.WNOHANG) != (0, 0):
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"the pull never reached {point} (or ended by itself)")
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL

    # Only what was committed before is visible.
    reader = Store(root)
    assert {e.name: dict(e.tags) for e in reader.list()} == {"other": {"latest": other}}
    assert os.listdir(root / "versions") == [other]
    assert os.listdir(root / "hub") == []
    assert reader.verify() == []
    leftovers = os.listdir(root / "tmp")
    assert leftovers  # the dead pull's staging (and commit) dir, and its record's space
    Store(root).recover()  # within the grace period: another replica might be writing
    assert os.listdir(root / "tmp") == leftovers
    Store(root, tmp_grace=0).recover()
    assert os.listdir(root / "tmp") == []

    hub.stall.clear()
    pulled = puller.fetch(HubRef.parse(REPO), NAME, "latest", TINY_SPEC)
    assert reader.resolve(NAME).digest == pulled.digest
    assert HubCache(root).pulled(NAME, "latest", pulled.digest)
    assert reader.verify() == []


async def _never() -> None:
    raise AssertionError("no gc expected")

