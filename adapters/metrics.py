"""Prometheus series of the registry: how long getting an adapter in takes, and pulls.

``hotswap_adapter_load_seconds`` has one ``phase`` per step of an adapter's way to the
engine: ``fetch`` (download from the hub or object storage, a watched dir's copy, or
receiving an upload's bytes), ``admission``
(checking and storing it) and ``engine`` (the engine load, observed by the server's
serving table). The registry knows nothing of HTTP; the server exposes these on
``/metrics`` with its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram

#: From a local copy (ms) to a large download (minutes).
LOAD_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 120.0, 300.0)

LOAD_SECONDS = Histogram(
    "hotswap_adapter_load_seconds",
    "Time to get an adapter version to the engine, by phase: fetch (hub or S3 download, "
    "upload body, watched dir copy), admission (validate and store), engine (engine "
    "load); source: hub, s3, upload, path, store (engine loads of stored versions).",
    ["phase", "source"], buckets=LOAD_BUCKETS)
HUB_PULLS = Counter(
    "hotswap_hub_pulls",
    "Hub pulls by result: ok, or the registry error code that stopped it.", ["result"])
S3_PULLS = Counter(
    "hotswap_s3_pulls",
    "Pulls from S3-compatible object storage (adapterctl pull s3://...) by result: ok, "
    "or the registry error code that stopped it.", ["result"])
HUB_PULL_BYTES = Counter(
    "hotswap_hub_pull_bytes", "Bytes of adapter versions pulled from the hub and stored.")


@contextmanager
def timed(phase: str, source: str) -> Iterator[None]:
    """Observe the block's duration if it completes (failures are counted elsewhere)."""
    start = time.perf_counter()
    yield
    LOAD_SECONDS.labels(phase, source).observe(time.perf_counter() - start)
