"""Samples and the schedule that takes them: at one adapter count, interleaved rounds of
every operation, wall-clock latency per call and CPU time per call of each batch."""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
from rich.progress import Progress

from . import store as store_side
from .config import LIST_OPS, STORE_OPS, Config, Op
from .server import process_cpu_ns

if TYPE_CHECKING:
    from hotswap.adapters.store import Store


@dataclass
class Sample:
    """One op at one count: latency of every call, CPU time per call of every batch (in
    seconds), and the entries and body size of the last answer."""

    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    entries: int = 0
    body_bytes: int = 0

    def value(self, metric: str) -> float:
        """Median wall-clock latency, or median CPU time per call over the batches."""
        return statistics.median(self.times if metric == "wall" else self.cpu)

    @property
    def p90(self) -> float:
        return statistics.quantiles(self.times, n=10)[-1] if len(self.times) > 1 else self.times[0]


# count -> op -> sample
Results = dict[int, dict[str, Sample]]


def timed(op: Op, sample: Sample) -> None:
    started = time.perf_counter()
    got = op()
    sample.times.append(time.perf_counter() - started)
    # Outside the timing: decode a listing's body to count its entries.
    if isinstance(got, httpx.Response):
        sample.body_bytes = len(got.content)
        body = got.json()
        sample.entries = len(body["data"]) if isinstance(body.get("data"), list) else 1
    elif isinstance(got, list):
        sample.entries = len(got)
    else:
        sample.entries = 1


def measure_at(
    count: int,
    ops: dict[str, Op],
    store: Store | None,
    names: list[str],
    server_pid: int | None,
    cfg: Config,
    progress: Progress,
) -> dict[str, Sample]:
    """``cfg.rounds`` rounds; in each, every op runs one batch (its share of the reps),
    ops in a rotating order, so slow drifts in machine load hit all of them alike. A
    batch's CPU time (server process for HTTP, this thread for Store) over its calls
    gives one CPU-per-call value: robust to other work on the cores, unlike latency."""
    samples = {op: Sample() for op in ops}
    for call in ops.values():
        for _ in range(cfg.warmup):
            call()
    if store is not None:
        store_side.warm(store, names)
    clocks: dict[str, Callable[[], int]] = {op: store_side.clock for op in STORE_OPS}
    if server_pid is not None:
        pid = server_pid
        clocks.update((op, lambda: process_cpu_ns(pid)) for op in ops if op not in STORE_OPS)
    batch = {
        op: max(1, (cfg.list_reps if op in LIST_OPS else cfg.reps) // cfg.rounds) for op in ops
    }
    order = list(ops)
    task = progress.add_task(f"measuring at {count}", total=cfg.rounds * len(order))
    for round_no in range(cfg.rounds):
        shift = round_no % len(order)
        for op in order[shift:] + order[:shift]:
            clock = clocks.get(op)
            start_cpu = clock() if clock else 0
            for _ in range(batch[op]):
                timed(ops[op], samples[op])
            if clock:
                # Listings decode their JSON inside the batch, but in this process:
                # only Store ops use this thread's clock, and they decode nothing.
                samples[op].cpu.append((clock() - start_cpu) / batch[op] / 1e9)
            progress.advance(task)
    progress.remove_task(task)
    return samples


# --- reading the results (tables, report and plot alike) ---------------------------------


def has(results: Results, op: str, metric: str) -> bool:
    first = results[min(results)]
    return op in first and (metric == "wall" or bool(first[op].cpu))


def series(results: Results, op: str) -> list[Sample]:
    """``op``'s samples at every count, ascending."""
    return [results[c][op] for c in sorted(results)]


def ratios(values: list[float]) -> list[float]:
    """Each value after the first over the first (the reference count's)."""
    return [v / values[0] for v in values[1:]]


def values(s: list[Sample], metric: str) -> list[float]:
    return [x.value(metric) for x in s]


def per_entry(s: list[Sample], metric: str) -> list[float]:
    return [x.value(metric) / max(x.entries, 1) for x in s]


def marginal_costs(s: list[Sample], metric: str) -> list[float]:
    """Cost added per added entry between consecutive counts."""
    return [
        (b.value(metric) - a.value(metric)) / max(b.entries - a.entries, 1)
        for a, b in itertools.pairwise(s)
    ]
