"""Adapter registry at scale: resolve and listing latency at 10, 100 and 1,000 adapters.

Issue #3 asks that resolving a name and ``GET /v1/models`` stay flat as the store grows
(goal: at most 1.5x the 10-adapter latency at 1,000 adapters). This starts a real
``hotswap serve`` (bundled model on CPU, a fresh store), registers tiny distinct LoRA
adapters through the admin API (``POST /v1/adapters``, a tar archive per adapter), and
at each count measures, in interleaved rounds after a warm-up, wall-clock latency and
CPU time per call (the server process's for HTTP; robust to other work on the cores):

- ``GET /v1/adapters/{name}``  one adapter's info, over HTTP, random registered names;
- ``Store.resolve(name)``      the same store folder opened in this process: the store's
  own cost without HTTP, threads and JSON;
- ``GET /v1/models``           every adapter (and its tags) as an OpenAI model list;
- ``GET /v1/adapters``         every adapter with its tags and latest version;
- ``Store.list()``             the store half of both listings, in this process;
- ``GET /health``              a constant-work control: drifts in machine load show here.

A listing's body grows with the number of adapters, so besides its latency ratio the
output gives its cost per entry and the marginal cost of each added entry; flat means
the per-entry cost does not grow, not that the listing takes constant time.

    python bench/registry_scale.py                       # 10,100,1000; records in BENCHMARKS.md
    python bench/registry_scale.py --counts 10,100 --reps 50 --no-record
    python bench/registry_scale.py --url http://127.0.0.1:8000 --store ~/.cache/hotswap/store

Writes ``bench/results/registry_scale-<date>-<time>.png`` (``--png``) and records its section in
``BENCHMARKS.md`` (``--no-record``: neither).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import statistics
import tempfile
from pathlib import Path

import httpx
from hotswap.adapters.store import Store

# bench/ is sys.path[0] when this runs as `python bench/registry_scale.py`: the shared
# helpers and this benchmark's parts import as top-level modules (see bench/ruff.toml).
import common
from common import console
from registry.config import GOAL, METRICS, NAME_PREFIX, PNG, Config
from registry.measure import Results, measure_at
from registry.plot import plot
from registry.report import latency_table, per_entry_table, record, verdicts
from registry.server import Registered, http_ops, register_up_to, stored_names
from registry.store import store_ops

log = logging.getLogger("registry_scale")


def parse_args() -> Config:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Without --url, a `hotswap serve` with a fresh temporary --store is started.",
    )
    parser.add_argument(
        "--counts",
        default="10,100,1000",
        help="adapter counts to measure at, ascending; the first is the reference (default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--reps",
        type=int,
        default=300,
        help="measurements per count of each point operation (default: %(default)s)",
    )
    parser.add_argument(
        "--list-reps",
        type=int,
        default=60,
        help="measurements per count of each listing (default: %(default)s)",
    )
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls of each op first")
    parser.add_argument(
        "--rounds",
        type=int,
        default=10,
        help="interleaved rounds per count; each op runs reps/rounds calls per round "
        "(default: %(default)s)",
    )
    parser.add_argument("--rank", type=int, default=1, help="LoRA rank (q_proj, every layer)")
    parser.add_argument(
        "--url",
        default=None,
        help="measure an already running server instead of starting one (adapters named "
        f"{NAME_PREFIX}-NNNN are added to its store and left there)",
    )
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help="with --url: that server's store folder, for the in-process Store measurements "
        "(skipped without it)",
    )
    parser.add_argument(
        "--server-pid",
        type=int,
        default=None,
        help="with --url: the server's process id, for its CPU time per request (skipped "
        "without it)",
    )
    parser.add_argument(
        "--keep-store", action="store_true", help="keep the temporary store after the run"
    )
    parser.add_argument("--seed", type=int, default=0, help="weights and name sampling seed")
    parser.add_argument(
        "--no-record", action="store_true", help="do not write the PNG or BENCHMARKS.md"
    )
    parser.add_argument(
        "--png", type=Path, default=PNG, help="where to write the plot (default: %(default)s)"
    )
    parser.add_argument(
        "--note", default="", help="a sentence for the BENCHMARKS.md section (what was run)"
    )
    args = parser.parse_args()
    counts = sorted({int(c) for c in args.counts.split(",") if c.strip()})
    if not counts or counts[0] < 1:
        parser.error("--counts needs positive integers")
    if (args.store is not None or args.server_pid is not None) and args.url is None:
        parser.error("--store and --server-pid are only for --url (else a server is started)")
    if args.rounds < 1 or args.reps < args.rounds or args.list_reps < args.rounds:
        parser.error("--reps and --list-reps must be at least --rounds (>= 1)")
    return Config(
        counts=counts,
        reps=args.reps,
        list_reps=args.list_reps,
        warmup=args.warmup,
        rounds=args.rounds,
        rank=args.rank,
        url=args.url.rstrip("/") if args.url else None,
        store=args.store.expanduser() if args.store else None,
        server_pid=args.server_pid,
        keep_store=args.keep_store,
        record=not args.no_record,
        seed=args.seed,
        png=args.png.resolve(),
        note=args.note,
    )


# --- main --------------------------------------------------------------------------------


def run(
    cfg: Config, url: str, store_dir: Path | None, server_pid: int | None
) -> tuple[Results, Registered]:
    store = Store(store_dir) if store_dir is not None else None
    rng = random.Random(cfg.seed)
    results: Results = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        existing = stored_names(client)
        if existing:
            log.info("the store already holds %d adapters", len(existing))
        state = Registered(names=existing, total=len(existing))
        if state.total > cfg.counts[0]:
            raise SystemExit(
                f"the store already holds {state.total} adapters, more than the first count"
            )
        with common.progress_bar() as progress:
            for count in cfg.counts:
                register_up_to(client, count, state, cfg, progress)
                # Resolve among every name this run registered, old and new alike.
                names = state.ours or sorted(state.names)
                ops = http_ops(client, names, rng)
                if store is not None:
                    ops |= store_ops(store, names, rng)
                results[count] = measure_at(count, ops, store, names, server_pid, cfg, progress)
                log.info(
                    "%d adapters: resolve %s ms, /v1/models %s ms",
                    count,
                    common.ms(results[count]["http_resolve"].value("wall")),
                    common.ms(results[count]["http_models"].value("wall")),
                )
    return results, state


def main() -> None:
    common.setup_logging()
    cfg = parse_args()
    if cfg.url is not None:
        results, state = run(cfg, cfg.url, cfg.store, cfg.server_pid)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="registry-scale-"))
        try:
            store_dir = tmp / "store"
            # warning: no access-log line per request (thousands here), which would also
            # be timed.
            args = ["--store", str(store_dir), "--max-model-len", "512", "--log-level", "warning"]
            with common.running_server(args, tmp / "server.log") as (url, pid):
                results, state = run(cfg, url, store_dir, pid)
        finally:
            if cfg.keep_store:
                log.info("kept the store and server log in %s", tmp)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    if state.upload_s:
        log.info(
            "uploads: %d, median %.0f ms",
            len(state.upload_s),
            statistics.median(state.upload_s) * 1e3,
        )
    console.print()
    for metric in METRICS:
        console.print(latency_table(results, metric))
    console.print(per_entry_table(results))
    console.print(f"Against the goal (flat, <= {GOAL}x the {min(results)}-adapter case):")
    for line in verdicts(results):
        console.print("  " + line.replace("`", ""), highlight=False)
    if cfg.record:
        title = (
            f"hotswap adapter registry: {cfg.rounds} rounds, {cfg.reps} / {cfg.list_reps} "
            f"calls per count, {os.cpu_count()} shared cores"
        )
        plot(results, cfg.png, f"{title}\n{cfg.note}" if cfg.note else title)
        record(cfg, results, state, cfg.png)
        console.print(f"wrote {os.path.relpath(cfg.png)} and recorded in BENCHMARKS.md")


if __name__ == "__main__":
    main()
