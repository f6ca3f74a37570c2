"""Load an OpenAI-compatible endpoint with multi-adapter traffic and measure it at the client.

Zipf(alpha) popularity over the models given (first = most popular; alpha 0 = uniform),
seeded prompt and output lengths, streaming (TTFT and time per output token as the client
sees them). Closed loop (``--concurrency``), open loop (``--rate``, Poisson arrivals), or a
rate sweep to saturation (``--sweep``). Any OpenAI-compatible server: the same command
measures hotswap and its peers.

    python bench/loadgen.py --url http://127.0.0.1:8000 --model smollm2 --model a1 \\
        --model a2 --requests 64 --concurrency 16 --json out.json --plot out.png
    python bench/loadgen.py --url ... --model ... --sweep 1,2,4,8 --plot sweep.png

The workload core is bench/loadgen_core/ (also used by the tests and the comparisons).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

import common
from loadgen_core import Summary, WorkloadSpec, make_workload, run_closed, run_open, summarize


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("HOTSWAP_URL", "http://127.0.0.1:8000"))
    p.add_argument("--api-key", default=os.environ.get("HOTSWAP_API_KEY"))
    p.add_argument("--model", action="append", required=True,
                   help="model id, repeatable, most popular first")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--alpha", type=float, default=1.0, help="Zipf exponent (0: uniform)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", type=int, default=16, help="closed loop (default)")
    mode.add_argument("--rate", type=float, help="open loop: Poisson arrivals, req/s")
    mode.add_argument("--sweep", help="open loop at each rate, e.g. 1,2,4,8")
    p.add_argument("--prompt-mean", type=int, default=64)
    p.add_argument("--prompt-std", type=float, default=16.0)
    p.add_argument("--output-mean", type=int, default=32)
    p.add_argument("--output-std", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the summaries here")
    p.add_argument("--plot", type=Path, help="write a PNG here")
    return p.parse_args()


def run(args: argparse.Namespace, rate: float | None) -> Summary:
    spec = WorkloadSpec(models=tuple(args.model), requests=args.requests, alpha=args.alpha,
                        prompt_mean=args.prompt_mean, prompt_std=args.prompt_std,
                        output_mean=args.output_mean, output_std=args.output_std,
                        seed=args.seed)
    workload = make_workload(spec)
    label = f"{rate} req/s" if rate else f"concurrency {args.concurrency}"
    with common.progress_bar() as bar:
        task = bar.add_task(label, total=spec.requests)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done)

        if rate:
            results, wall = asyncio.run(run_open(args.url, workload, rate,
                                                 api_key=args.api_key, on_progress=progress))
        else:
            results, wall = asyncio.run(run_closed(args.url, workload, args.concurrency,
                                                   api_key=args.api_key,
                                                   on_progress=progress))
    return summarize(results, wall)


def show(label: str, s: Summary) -> None:
    common.console.print(
        f"{label}: {s.requests - s.errors}/{s.requests} ok, {s.requests_per_s:.2f} req/s, "
        f"{s.output_tokens_per_s:.0f} output tok/s; TTFT p50 {common.ms(s.ttft['p50'])} "
        f"p90 {common.ms(s.ttft['p90'])} p99 {common.ms(s.ttft['p99'])}; TPOT p50 "
        f"{common.ms(s.tpot['p50'])} p99 {common.ms(s.tpot['p99'])}")
    for sample in s.error_samples:
        common.console.print(f"  error: {sample}", highlight=False)


def plot(runs: dict[str, Summary], path: Path) -> None:
    plt = common.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    labels = list(runs)
    left.bar(labels, [s.output_tokens_per_s for s in runs.values()], color="tab:blue")
    left.set_ylabel("output tokens / s")
    for p, style in (("p50", "o-"), ("p99", "s--")):
        right.plot(labels, [s.ttft[p] * 1000 for s in runs.values()], style, label=f"TTFT {p}")
    right.set_ylabel("ms")
    right.legend()
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle("loadgen: " + ", ".join(sorted(set(label.split()[0] for label in labels))))
    common.save_figure(fig, path)


def main() -> None:
    common.setup_logging()
    args = parse_args()
    rates: list[float | None] = ([float(r) for r in args.sweep.split(",")] if args.sweep
                                 else [args.rate])
    runs: dict[str, Summary] = {}
    for rate in rates:
        label = f"{rate:g} req/s" if rate else f"c={args.concurrency}"
        runs[label] = run(args, rate)
        show(label, runs[label])
    if args.json:
        payload: dict[str, Any] = {k: v.to_json() for k, v in runs.items()}
        args.json.write_text(json.dumps(payload, indent=2))
    if args.plot:
        plot(runs, args.plot)
        common.console.print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
