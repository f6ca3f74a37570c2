"""What the soak watches besides answers: the server's memory and its engine requests.

RSS is summed over the server's whole process tree (psutil): vLLM's engine core and its
workers are child processes, and that is where adapter weights and the KV cache live.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

MIB = 1024 * 1024
#: The series that must be back to zero once no client has a request open: hotswap's own
#: (summed over its ``model`` labels) and the engine scheduler's.
LEAK_SERIES = (
    "hotswap_engine_requests_in_flight",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
)


def tree_rss(pid: int) -> tuple[int, int]:
    """(RSS of ``pid``, RSS of all its descendants) in bytes; processes that end while
    being read count as 0."""
    root = psutil.Process(pid)
    own = root.memory_info().rss
    children = 0
    for child in root.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            children += child.memory_info().rss
    return own, children


@dataclass(frozen=True)
class RssSample:
    t: float  # monotonic seconds
    server: int  # bytes
    children: int

    @property
    def total(self) -> int:
        return self.server + self.children


async def sample_rss(pid: int, into: list[RssSample], every_s: float,
                     stop: asyncio.Event) -> None:
    """Append a sample every ``every_s`` until ``stop`` is set."""
    while not stop.is_set():
        try:
            own, children = await asyncio.to_thread(tree_rss, pid)
        except psutil.NoSuchProcess:
            return  # the server is gone; the soak notices and fails
        into.append(RssSample(time.monotonic(), own, children))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


@dataclass(frozen=True)
class RssVerdict:
    middle_mib: float  # median total RSS of the middle third of the traffic
    last_mib: float  # ... and of the last third
    growth_mib: float
    tolerance_mib: float
    #: Least-squares slope of total RSS over the last two thirds (information only).
    slope_mib_per_min: float
    samples: int

    @property
    def ok(self) -> bool:
        return self.growth_mib <= self.tolerance_mib


def judge_rss(samples: Sequence[RssSample], start: float, end: float, *,
              tolerance_mib: float) -> RssVerdict:
    """Median total RSS of the last third of [start, end] against the middle third's.

    The first third is warm-up (every adapter's first load, allocator arenas, vLLM's
    LoRA buffers), not growth. Medians, not maxima: RSS steps up and down by an adapter's
    weights as the engine loads and evicts them. The tolerance is absolute, not a share
    of the total: most of the tree's RSS is the KV cache and the weights, allocated once
    at start, so a percentage of it would hide leaks the size of everything that moves."""
    third = (end - start) / 3
    middle = [s for s in samples if start + third <= s.t < start + 2 * third]
    last = [s for s in samples if start + 2 * third <= s.t <= end]
    if len(middle) < 2 or len(last) < 2:
        raise ValueError("too few RSS samples to compare the middle and last thirds")
    mid = statistics.median(s.total for s in middle) / MIB
    lst = statistics.median(s.total for s in last) / MIB
    both = middle + last
    slope = statistics.linear_regression([s.t for s in both],
                                         [s.total / MIB for s in both]).slope * 60
    return RssVerdict(mid, lst, lst - mid, tolerance_mib, slope, len(both))


async def engine_gauges(client: httpx.AsyncClient) -> dict[str, float]:
    """The LEAK_SERIES values now, each summed over its labels."""
    resp = await client.get("/metrics")
    resp.raise_for_status()
    totals = dict.fromkeys(LEAK_SERIES, 0.0)
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return totals


async def wait_no_requests(client: httpx.AsyncClient, timeout_s: float
                           ) -> tuple[bool, Mapping[str, float]]:
    """Poll the gauges until all are 0 (True) or ``timeout_s`` passed (False); returns
    the last values. Polled, not read once: the engine publishes its scheduler gauges
    after its step, a moment after the last answer went out."""
    deadline = time.monotonic() + timeout_s
    while True:
        gauges = await engine_gauges(client)
        if not any(gauges.values()):
            return True, gauges
        if time.monotonic() > deadline:
            return False, gauges
        await asyncio.sleep(0.5)
