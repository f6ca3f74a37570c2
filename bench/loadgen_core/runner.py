"""Closed loop (a fixed number of requests in flight) and open loop (requests sent at
their arrival times, whatever the server's pace: the load a rate sweep raises until the
server saturates)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from .client import Result, send
from .workload import Workload

#: Called after each request with (done, total).
ProgressFn = Callable[[int, int], None]


def _client(url: str, api_key: str | None, concurrency: int) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(base_url=url, headers=headers, limits=limits,
                             timeout=httpx.Timeout(600.0, connect=10.0))


async def run_closed(url: str, workload: Workload, concurrency: int, *,
                     api_key: str | None = None, on_progress: ProgressFn | None = None
                     ) -> tuple[list[Result], float]:
    """Every request, ``concurrency`` at a time; returns the results and the wall time."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(workload.requests)):
        queue.put_nowait(i)
    results: list[Result] = []

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            results.append(await send(client, workload.requests[queue.get_nowait()]))
            if on_progress:
                on_progress(len(results), len(workload.requests))

    async with _client(url, api_key, concurrency) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return sorted(results, key=lambda r: r.index), wall


async def run_open(url: str, workload: Workload, rate: float, *, api_key: str | None = None,
                   max_in_flight: int = 256, on_progress: ProgressFn | None = None
                   ) -> tuple[list[Result], float]:
    """Each request at its Poisson arrival time for ``rate`` req/s (at most
    ``max_in_flight`` connections: past saturation, arrivals queue at the client)."""
    arrivals = workload.arrivals(rate)
    results: list[Result] = []

    async def one(client: httpx.AsyncClient, i: int, start: float) -> None:
        await asyncio.sleep(max(0.0, start + arrivals[i] - time.perf_counter()))
        results.append(await send(client, workload.requests[i]))
        if on_progress:
            on_progress(len(results), len(workload.requests))

    async with _client(url, api_key, max_in_flight) as client:
        start = time.perf_counter()
        await asyncio.gather(*(one(client, i, start) for i in range(len(arrivals))))
        wall = time.perf_counter() - start
    return sorted(results, key=lambda r: r.index), wall
