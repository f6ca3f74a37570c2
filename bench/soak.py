"""Soak: minutes of concurrent greedy traffic on many adapters while they are uploaded,
re-tagged and deleted; every answer checked, memory and engine requests watched.

Starts ``hotswap serve`` on the bundled model (float32, so greedy answers do not depend
on what else shares a batch; a fresh store), then runs ``soak_core`` against it (see
bench/soak_core/run.py for the phases, bench/soak_core/oracle.py for which answers are
allowed). Fails (exit 1) on any wrong or lost answer, failed admin call, engine request
still open once the clients are done, or RSS growth from the middle to the last third of
the traffic beyond the tolerance.

    python bench/soak.py                                  # 4 min, 8 adapters, 16 clients
    python bench/soak.py --minutes 1 --adapters 8 --clients 16
    python bench/soak.py --url http://127.0.0.1:8000 --pid 1234   # a server already running

Writes ``bench/results/soak-<date>-<time>.json`` (summary) and ``.png`` (RSS and latency
over time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

# bench/ is sys.path[0] when this runs as `python bench/soak.py`: the shared helpers and
# the soak's core import as top-level modules (see bench/ruff.toml).
import common
from soak_core import Live, Outcome, SoakConfig, SoakResult, Target, soak
from soak_core.probes import MIB

log = logging.getLogger("soak")

# Rank-8 LoRA on q_proj and v_proj of every layer, float32: 1.8 MB per version, so
# uploads are quick, and with this std the greedy answers of two versions differ on
# (nearly) every prompt (the summary counts the pairs that do not:
# indistinct_version_pairs).
RANK = 8
MODULES = ("q_proj", "v_proj")
WEIGHT_STD = 0.08
OUTCOME_COLOURS = {
    Outcome.OK: "tab:blue",
    Outcome.GONE: "tab:grey",
    Outcome.ABORTED: "tab:green",
    Outcome.WRONG: "tab:red",
    Outcome.LOST: "black",
    Outcome.UNCHECKED: "tab:purple",
}


@dataclass(frozen=True)
class Args:
    cfg: SoakConfig
    url: str | None
    pid: int | None
    max_loras: int
    record: bool


def parse_args() -> Args:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="traffic duration")
    parser.add_argument("--adapters", type=int, default=8, help="adapter names")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--mutation-every", type=float, default=1.0,
                        help="mean seconds between admin ops")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base-share", type=float, default=0.1,
                        help="share of requests to the base model")
    parser.add_argument("--max-loras", type=int, default=4,
                        help="engine batch slots (fewer than adapters: eviction churn)")
    parser.add_argument("--rss-tolerance-mib", type=float, default=32.0,
                        help="allowed growth, middle to last third (see SoakConfig)")
    parser.add_argument("--url", default=None, help="soak a running server instead")
    parser.add_argument("--pid", type=int, default=None, help="its hotswap process (with --url)")
    parser.add_argument("--no-record", action="store_true", help="write no JSON or PNG")
    a = parser.parse_args()
    if (a.url is None) != (a.pid is None):
        parser.error("--url and --pid go together")
    cfg = SoakConfig(
        duration_s=a.minutes * 60, adapters=a.adapters, clients=a.clients, prefix="soak",
        max_tokens=a.max_tokens, mutation_every_s=a.mutation_every, seed=a.seed,
        base_share=a.base_share,
        rss_tolerance_mib=a.rss_tolerance_mib,
    )
    return Args(cfg, a.url, a.pid, a.max_loras, not a.no_record)


def archive(seed: int) -> bytes:
    files = common.lora_files(common.BUNDLED_MODEL, rank=RANK, target_modules=MODULES,
                              seed=seed, std=WEIGHT_STD, dtype="float32")
    return common.tar_bytes(files)


@contextmanager
def server(args: Args, work: Path) -> Iterator[Target]:
    if args.url is not None and args.pid is not None:
        import httpx

        models = httpx.get(f"{args.url}/v1/models", timeout=10).json()["data"]
        base = next(m["id"] for m in models if m.get("parent") is None)
        yield Target(args.url, base, args.pid)
        return
    cmd = ["--dtype", "float32", "--max-model-len", "1024", "--max-loras",
           str(args.max_loras), "--store", str(work / "store")]
    with common.running_server(cmd, work / "server.log") as (url, pid):
        yield Target(url, "SmolLM2-135M-Instruct", pid)


def run(args: Args, target: Target) -> SoakResult:
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(), console=common.console,
    )
    task = progress.add_task("set-up", total=args.cfg.duration_s, stats="")

    def tick(live: Live) -> None:
        statuses = " ".join(f"{k}:{v}" for k, v in sorted(live.statuses.items()))
        progress.update(task, description=f"{live.phase:<16}",
                        completed=min(live.elapsed_s, live.duration_s),
                        stats=f"{statuses} ops:{live.ops} rss:{live.rss_mib:.0f}MiB")

    with progress:
        return asyncio.run(soak(args.cfg, target, archive, tick))


def plot(result: SoakResult, path: Path, title: str) -> None:
    plt = common.pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    t0 = result.started
    ts = [s.t - t0 for s in result.rss]
    top.plot(ts, [s.total / MIB for s in result.rss], label="process tree")
    top.plot(ts, [s.server / MIB for s in result.rss], label="hotswap (API) process")
    top.plot(ts, [s.children / MIB for s in result.rss], label="engine processes")
    third = (result.traffic_end - t0) / 3
    for x in (third, 2 * third):
        top.axvline(x, color="grey", linestyle=":", linewidth=1)
    v = result.rss_verdict
    if v is not None:
        top.hlines([v.middle_mib, v.last_mib], [third, 2 * third], [2 * third, 3 * third],
                   colors="tab:red", linewidth=2, label="median of the middle / last third")
    top.set_ylabel("RSS (MiB)")
    top.legend(fontsize=8, loc="center right")
    top.set_ylim(bottom=0)
    for outcome, colour in OUTCOME_COLOURS.items():
        pts = [(r.sent - t0, r.latency) for r, o in zip(result.records, result.outcomes,
                                                          strict=True) if o is outcome]
        if pts:
            bottom.scatter(*zip(*pts, strict=True), s=4, color=colour, alpha=0.6,
                           label=f"{outcome.value} ({len(pts)})")
    ops = [op.start - t0 for op in result.ops if op.start >= t0]
    bottom.plot(ops, [0] * len(ops), "|", color="tab:orange", markersize=8,
                label=f"admin ops ({len(ops)})")
    bottom.set_ylabel("latency (s), by time sent")
    bottom.set_xlabel("seconds since the traffic started")
    bottom.set_ylim(bottom=0)
    bottom.legend(fontsize=8, loc="upper left", ncols=3, markerscale=3)
    fig.suptitle(title, fontsize=9)
    common.save_figure(fig, path)


def report(summary: dict[str, Any]) -> None:
    out = summary["outcomes"]
    lat = summary["latency_s"] or {}
    rss = summary["rss"]
    log.info("%d requests in %.0f s: %s (%d of the OK ones raced an admin op)",
             summary["requests"], summary["traffic_s"], out, summary["raced_ok"])
    log.info("latency of OK answers: p50 %s s, p90 %s s, p99 %s s, max %s s",
             lat.get("p50"), lat.get("p90"), lat.get("p99"), lat.get("max"))
    log.info("admin ops: %s; %d versions, %d indistinct pairs", summary["admin_ops"],
             summary["versions"], summary["indistinct_version_pairs"])
    if rss is not None:
        log.info("RSS median middle third %.0f MiB, last third %.0f MiB: %+.1f MiB "
                 "(tolerance %.0f MiB); slope over both %+.1f MiB/min", rss["middle_mib"],
                 rss["last_mib"], rss["growth_mib"], rss["tolerance_mib"],
                 rss["slope_mib_per_min"])
    log.info("gauges after traffic %s, after clean-up %s", summary["gauges_after_traffic"],
             summary["gauges_after_cleanup"])
    for failure in summary["failures"]:
        log.error("FAIL: %s", failure)
    for wrong in summary["wrong_or_lost"][:10]:
        log.error("  %s", json.dumps(wrong))


def main() -> int:
    common.setup_logging()
    args = parse_args()
    cfg = args.cfg
    png = common.stamped_png("soak")
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        with server(args, Path(tmp)) as target:
            result = run(args, target)
        server_log = Path(tmp) / "server.log"
        if not result.ok and args.record and server_log.exists():
            # The evidence of a failure: kept next to the summary.
            shutil.copy(server_log, png.with_suffix(".log"))
    summary = result.summary()
    summary["machine"] = common.machine()
    summary["load_average_after"] = common.load_average()
    report(summary)
    if args.record:
        path = png.with_suffix(".json")
        path.write_text(json.dumps(summary, indent=1) + "\n")
        plot(result, png, f"soak: {cfg.adapters} adapters, {cfg.clients} clients, "
             f"{cfg.duration_s / 60:.1f} min, admin op every ~{cfg.mutation_every_s:.1f} s; "
             f"{'PASS' if result.ok else 'FAIL'}")
        log.info("wrote %s and %s", common.repo_relative(path), common.repo_relative(png))
    log.info("soak %s", "passed" if result.ok else "FAILED")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
