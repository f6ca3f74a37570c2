"""The writers' lock: an exclusive ``flock`` on the store's ``lock`` file, with a timeout."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

from ..errors import StoreBusy
from .layout import Layout


@contextlib.contextmanager
def writer_lock(layout: Layout, timeout: float) -> Iterator[None]:
    """Hold the lock for the block; :class:`StoreBusy` if not had within ``timeout`` s."""
    # A fresh open per acquisition: flock belongs to the open file description, so
    # threads and Store objects in one process exclude each other too.
    fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreBusy(
                        f"store {layout.root} is locked by another writer; retry later"
                    ) from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # releases the lock
