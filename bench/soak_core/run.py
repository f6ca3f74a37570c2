"""The soak itself: concurrent greedy clients, one sequential admin mutator, RSS samples;
then the leak check, the quiet reference run and the judgement of every answer.

Phases, all against one running server (``Target``):

1. set-up: ``adapters`` names, each one uploaded version tagged ``latest`` and ``stable``;
2. traffic: ``clients`` loops of greedy requests (``temperature: 0``,
   ``return_token_ids``) to the base model, ``name`` (= ``name:latest``) and
   ``name:stable``, over completions and chat, a few of them streams the client drops
   after the first chunk; meanwhile the mutator uploads new versions, moves tags both
   ways, deletes tags and whole names and re-creates them, and RSS is sampled;
3. drain and leak check: no client has a request open, so the in-flight gauges must
   return to 0;
4. reference: every version any ref ever pointed at (re-uploaded under a reference name
   if it was deleted: same bytes, same digest) and the base model answer every prompt,
   one request at a time on a server nothing else talks to;
5. judgement (``oracle.judge``), clean-up (every name the soak made is deleted) and a
   last leak check.

This module runs the phases; the clients are in ``traffic``, the mutator in ``mutator``,
the reference run and the judgement in ``reference``, the result in ``result``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable

import httpx
import psutil

from .config import ArchiveFactory, SoakConfig, Target
from .mutator import Mutator
from .oracle import ALLOWED, Timeline
from .probes import MIB, judge_rss, sample_rss, tree_rss, wait_no_requests
from .reference import indistinct_pairs, judge_all, reference_run
from .result import Live, SoakResult
from .traffic import client_loop

log = logging.getLogger(__name__)


async def soak(cfg: SoakConfig, target: Target, archives: ArchiveFactory,
               on_tick: Callable[[Live], None] | None = None) -> SoakResult:
    """Run every phase against ``target``; the result says what failed, if anything."""
    live = Live(duration_s=cfg.duration_s)
    timeout = httpx.Timeout(cfg.request_timeout_s, connect=30)
    limits = httpx.Limits(max_connections=2 * cfg.clients, max_keepalive_connections=cfg.clients)
    # Admin calls on a client of their own: they never wait for a traffic connection.
    async with (
        httpx.AsyncClient(base_url=target.url, headers=target.headers, timeout=timeout,
                          limits=limits) as client,
        httpx.AsyncClient(base_url=target.url, headers=target.headers, timeout=timeout
                          ) as admin,
    ):
        ticker = asyncio.create_task(_tick(live, target, on_tick))
        try:
            return await _phases(cfg, target, archives, client, admin, live)
        finally:
            ticker.cancel()


async def _phases(cfg: SoakConfig, target: Target, archives: ArchiveFactory,
                  client: httpx.AsyncClient, admin: httpx.AsyncClient, live: Live
                  ) -> SoakResult:
    res = SoakResult(cfg)
    timeline = Timeline()
    mutator = Mutator(cfg, admin, archives, timeline)
    res.ops = mutator.ops
    await mutator.set_up()
    if mutator.errors:
        raise RuntimeError(f"set-up failed: {mutator.errors}")
    log.info("set-up: %d adapters uploaded and tagged", cfg.adapters)

    down = await _traffic(cfg, target, client, admin, mutator, live, res)
    log.info("traffic done: %d requests, %d admin ops in %.0f s", len(res.records),
             len(res.ops), res.traffic_end - res.started)
    res.failures += [f"admin: {e}" for e in mutator.errors]
    if down is not None:
        # Nothing more to learn from it: judge what the clients saw (200s unchecked).
        res.failures.append(f"server down {res.traffic_end - res.started:.0f} s into the "
                            f"traffic: {down}")
    else:
        live.phase = "leak check"
        drained, gauges = await wait_no_requests(client, cfg.leak_timeout_s)
        res.leak_after_traffic = dict(gauges)
        if not drained:
            res.failures.append(f"engine requests left after the traffic: {gauges}")
        res.references = await reference_run(cfg, client, mutator, target, live, res.failures)
        res.indistinct_pairs = indistinct_pairs(res.references, len(cfg.prompts))

    res.outcomes, res.wrong, res.raced_ok = judge_all(res.records, timeline, res.references)
    bad = Counter(o.value for o in res.outcomes if o not in ALLOWED)
    if bad:
        res.failures.append(f"answers not allowed: {dict(bad)}")
    if cfg.check_rss and down is None:
        v = res.rss_verdict = judge_rss(res.rss, res.started, res.traffic_end,
                                        tolerance_mib=cfg.rss_tolerance_mib)
        if not v.ok:
            res.failures.append(f"RSS grew {v.growth_mib:.0f} MiB from the middle to the last "
                                f"third of the traffic (tolerance {v.tolerance_mib:.0f} MiB)")
    if down is None:
        await _clean_up(cfg, client, admin, mutator, live, res)
    return res


async def _traffic(cfg: SoakConfig, target: Target, client: httpx.AsyncClient,
                   admin: httpx.AsyncClient, mutator: Mutator, live: Live, res: SoakResult
                   ) -> str | None:
    """Clients, mutator and RSS sampler until the time is up (and the scripted ops are
    done) or the server is down; returns why it is down, if it is."""
    stop_traffic, stop_rss = asyncio.Event(), asyncio.Event()
    live.phase = "traffic"
    res.started = time.monotonic()
    sampler = asyncio.create_task(sample_rss(target.pid, res.rss, cfg.rss_every_s, stop_rss))
    tasks = [asyncio.create_task(client_loop(i, client, cfg, target, mutator.names,
                                             stop_traffic, res.records, live))
             for i in range(cfg.clients)]
    tasks.append(asyncio.create_task(mutator.run(stop_traffic, live)))
    down = None
    while down is None:
        live.elapsed_s = time.monotonic() - res.started
        # At least the scripted ops, however slow the machine.
        if live.elapsed_s >= cfg.duration_s and mutator.steps >= len(Mutator.SCRIPT):
            break
        down = await server_down(admin, target)
        await asyncio.sleep(0.5)
    stop_traffic.set()
    live.phase = "draining"
    await asyncio.gather(*tasks)
    res.traffic_end = time.monotonic()
    stop_rss.set()
    await sampler
    return down


async def server_down(admin: httpx.AsyncClient, target: Target) -> str | None:
    """Why the server can not serve any more (process gone, engine dead), else None."""
    if not psutil.pid_exists(target.pid):
        return "the server process is gone"
    try:
        resp = await admin.get("/health", timeout=30)
    except httpx.HTTPError as exc:
        return f"GET /health: {type(exc).__name__}"
    return None if resp.status_code == 200 else f"GET /health: {resp.status_code} {resp.text}"


async def _clean_up(cfg: SoakConfig, client: httpx.AsyncClient, admin: httpx.AsyncClient,
                    mutator: Mutator, live: Live, res: SoakResult) -> None:
    """Delete every name the soak made, then check the engine is idle once more."""
    live.phase = "clean-up"
    for name in [*mutator.names, f"{cfg.prefix}-ref"]:
        resp = await admin.delete(f"/v1/adapters/{name}")
        if resp.status_code not in (200, 404):
            res.failures.append(f"clean-up delete {name}: {resp.status_code} {resp.text}")
    drained, gauges = await wait_no_requests(client, cfg.leak_timeout_s)
    res.leak_after_cleanup = dict(gauges)
    if not drained:
        res.failures.append(f"engine requests left after clean-up: {gauges}")



async def _tick(live: Live, target: Target, on_tick: Callable[[Live], None] | None) -> None:
    """Refresh the live RSS and call ``on_tick`` once a second."""
    while True:
        with contextlib.suppress(psutil.Error):
            own, children = await asyncio.to_thread(tree_rss, target.pid)
            live.rss_mib = (own + children) / MIB
        if on_tick is not None:
            on_tick(live)
        await asyncio.sleep(1)
