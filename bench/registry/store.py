"""The store side: the server's store folder opened in this process, measured without
HTTP, threads or JSON in the way."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .config import Op

if TYPE_CHECKING:
    from hotswap.adapters.store import Store

# This thread's CPU time: a Store call runs on the calling thread and nowhere else.
clock: Callable[[], int] = time.thread_time_ns


def store_ops(store: Store, names: list[str], rng: random.Random) -> dict[str, Op]:
    """The measured Store calls: one manifest, and every entry."""
    return {
        "store_resolve": lambda: store.resolve(rng.choice(names)),
        "store_list": store.list,
    }


def warm(store: Store, names: list[str]) -> None:
    """Steady state: every manifest cached, as in a server that has listed them once
    (the warm-up listings did that for the server). A cold read parses JSON instead."""
    for name in names:
        store.resolve(name)
