"""A small real disk for store-fault tests, and a fake hub serving one big adapter.

The disk is a tmpfs of DISK_BYTES (the tests run as root; a mount that fails fails the
test, it never skips), filled by a ``filler`` file beside the store so that every ENOSPC
comes from the kernel at the write that hit it. Used by
tests/unit/adapters/test_store_faults.py and
tests/unit/server/admin/test_store_faults_http.py, each through fixtures of a few lines.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from hotswap.adapters.service import HubOptions, ServiceOptions
from huggingface_hub import file_download

from support.fake_hub import FakeHub, serving
from support.fakes import make_adapter_dir, service_options, tar_gz

PAGE = 4096
DISK_BYTES = 512 * 1024
REPO = "org/big"
NAME = "org--big"
ALL_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# --- the disk ----------------------------------------------------------------------------


@contextmanager
def mounted(mnt: Path) -> Iterator[Path]:
    """A tmpfs of DISK_BYTES at ``mnt`` (created here), unmounted on exit."""
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs",
                           str(mnt)], capture_output=True, text=True, check=False)
    if done.returncode != 0:  # a test of disk-full handling that can not fill a disk fails
        pytest.fail(f"can not mount a tmpfs (these tests need root): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], check=False).returncode != 0:
            # Busy: something still holds a file there. Detach it anyway (no mount may
            # outlive the test), and fail: that file is a leak of its own.
            subprocess.run(["umount", "--lazy", str(mnt)], check=True)
            pytest.fail(f"{mnt} was still in use at teardown (a file left open)")


def free_bytes(disk: Path) -> int:
    st = os.statvfs(disk)
    return st.f_bavail * st.f_frsize


def fill(disk: Path, leave: int = 0) -> None:
    """Take every free byte of ``disk`` but ``leave`` (whole pages) with ``disk/filler``."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        chunk = b"\xff" * (1 << 16)
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
        size = os.fstat(fd).st_size
        os.ftruncate(fd, max(0, size - -(-leave // PAGE) * PAGE))
    finally:
        os.close(fd)
    assert free_bytes(disk) <= -(-leave // PAGE) * PAGE


def free(disk: Path) -> None:
    (disk / "filler").unlink(missing_ok=True)


# --- the hub, the adapter, the options ---------------------------------------------------


def big_adapter(src: Path, seed: int) -> Path:
    """A 90 KiB adapter ``src/big``: rank 8 on ALL_MODULES."""
    return make_adapter_dir(src, "big", rank=8, modules=ALL_MODULES, seed=seed)


def big_archive(src: Path, seed: int) -> bytes:
    """An 80 KiB archive (random weights hardly compress) of ``big_adapter``."""
    return tar_gz(big_adapter(src, seed))


@contextmanager
def big_hub(src: Path, seed: int) -> Iterator[FakeHub]:
    """A fake hub serving ``big_adapter(src, seed)`` as REPO."""
    fake = FakeHub()
    fake.add(REPO, big_adapter(src, seed))
    with serving(fake):
        yield fake


def options_on(disk: Path, hub: FakeHub) -> ServiceOptions:
    """The service's options with its store on ``disk``, pulling from ``hub``."""
    return replace(service_options(disk), hub=HubOptions(allow=("org",), endpoint=hub.url))


def skip_resume_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub sleeps 1 s before each of its 5 attempts to resume a broken
    download; the attempts still run (the fake hub cuts each one), without the pauses."""
    monkeypatch.setattr(file_download, "time", SimpleNamespace(sleep=lambda _s: None))
