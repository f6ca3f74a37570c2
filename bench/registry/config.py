"""A run's settings, the goal, and the names of the measured operations and metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import common

# Stamped, as every benchmark's plot: a run must not replace the plot an older section shows.
PNG = common.stamped_png("registry_scale")
# Issue #3: at 1,000 adapters, at most 1.5x the 10-adapter latency.
GOAL = 1.5
NAME_PREFIX = "scale"

# Pages of GET /v1/models: a fixed size, so unlike a whole listing they can stay flat.
PAGE_LIMIT = 100
PAGE_OPS = ("http_models_page", "http_models_after")

OPS = {
    "http_resolve": "GET /v1/adapters/{name}",
    "store_resolve": "Store.resolve(name)",
    "http_models": "GET /v1/models",
    "http_models_page": f"GET /v1/models?limit={PAGE_LIMIT}",
    "http_models_after": f"GET /v1/models?limit={PAGE_LIMIT}&after={{name}}",
    "http_adapters": "GET /v1/adapters",
    "store_list": "Store.list()",
    "http_health": "GET /health (control)",
}
LIST_OPS = ("http_models", "http_adapters", "store_list")
STORE_OPS = ("store_resolve", "store_list")
METRICS = {
    "wall": "wall-clock latency",
    "cpu": "CPU time per call (HTTP: the server process, all threads; Store: this thread)",
}

# A measured call; it returns what it got (a response, a manifest, entries).
Op = Callable[[], object]


@dataclass
class Config:
    counts: list[int]
    reps: int
    list_reps: int
    warmup: int
    rounds: int
    rank: int
    url: str | None
    store: Path | None
    server_pid: int | None
    keep_store: bool
    record: bool
    png: Path
    note: str
    seed: int
