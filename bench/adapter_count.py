"""Throughput and TTFT as the number of distinct adapters in the traffic grows: 1, 4, 16
and 64 rank-16 LoRAs, relative to base-only traffic, hotswap and vLLM's OpenAI server
with hotswap's CPU LoRA plugin and engine arguments side by side (vs_vllm's
``vllm+plugin+args``: the same engine configuration, so what differs is the serving
layer, including how each schedules adapter loads).

Both servers get ``max_loras`` 4 (adapter slots in a batch) and ``max_cpu_loras`` 16
(loaded adapters kept in host memory): at 16 adapters the slots churn, at 64 the host
cache does too, and adapters are read from disk again. Requests go to the point's
adapters in turn (request i to adapter i mod N), so every adapter of a point is used and
every batch of 16 mixes min(N, 16) of them. One server per arm and round serves all the
points (every adapter registered at start), in the same order for every arm.

    python bench/adapter_count.py                    # 2 rounds, records in BENCHMARKS.md
    python bench/adapter_count.py --rounds 1 --counts 0,4 --requests 16 --no-record
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
from pathlib import Path

import common
import vs_vllm
from loadgen_core import Summary, Workload, WorkloadSpec, make_workload

#: The peer: vLLM's server with hotswap's plugin and engine arguments.
PEER = "vllm+plugin+args"
ARMS = ("hotswap", PEER)
#: The reference every point is divided by: base-only traffic (0 adapters).
BASE = 0


def parse_args() -> tuple[vs_vllm.Config, list[int], tuple[str, ...]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--counts", default="0,1,4,16,64",
                   help="adapters in the traffic per point; 0 = base model only, the "
                   "reference (default: %(default)s)")
    p.add_argument("--requests", type=int, default=64, help="requests per point")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--tokens", type=int, default=32, help="output tokens per request")
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--dtype", default=common.fast_dtype(),
                   help="default: bfloat16 if the CPU has native bf16, else float32")
    p.add_argument("--max-loras", type=int, default=4)
    p.add_argument("--max-cpu-loras", type=int, default=16)
    p.add_argument("--stock", action="store_true",
                   help="also stock vLLM (no hotswap plugin; slow on CPU)")
    p.add_argument("--no-record", dest="record", action="store_false")
    a = p.parse_args()
    counts = sorted({int(c) for c in a.counts.split(",")})
    if counts[0] != BASE:
        counts.insert(0, BASE)  # every point is relative to base-only traffic
    cfg = vs_vllm.Config(a.rounds, a.requests, a.concurrency, a.tokens, a.prompt_tokens,
                         max(counts), 0.0, a.dtype, a.max_loras, False, a.record,
                         max_cpu_loras=a.max_cpu_loras)
    return cfg, counts, ARMS + (("vllm",) if a.stock else ())


def workload(cfg: vs_vllm.Config, adapters: list[str], count: int) -> Workload:
    """The same prompts and lengths at every point; only the models differ."""
    base = make_workload(WorkloadSpec(
        models=(vs_vllm.SERVED,), requests=cfg.requests, alpha=0,
        prompt_mean=cfg.prompt_tokens, prompt_std=cfg.prompt_tokens / 4,
        output_mean=cfg.tokens, seed=0))
    models = adapters[:count] if count else [vs_vllm.SERVED]
    return Workload(dataclasses.replace(base.spec, models=tuple(models)),
                    [dataclasses.replace(r, model=models[r.index % len(models)])
                     for r in base.requests])


# arm -> count -> one Summary per round
Runs = dict[str, dict[int, list[Summary]]]


def label(count: int) -> str:
    return "base only" if count == BASE else f"{count} adapter{'s' if count > 1 else ''}"


def med(values: list[float]) -> float:
    return statistics.median(values)


def table(counts: list[int], arms: tuple[str, ...], runs: Runs) -> str:
    def per_round(arm: str, count: int, f: str) -> list[float]:
        if f == "tput":
            return [s.output_tokens_per_s for s in runs[arm][count]]
        return [s.ttft[f] for s in runs[arm][count]]

    head = " | ".join(f"{a} tok/s (x base) | {a} TTFT p50 / p99" for a in arms)
    lines = [f"| traffic | {head} | hotswap / {PEER} tok/s | TTFT p99 |",
             "|---|" + "---:|" * (2 * len(arms) + 2)]
    for count in counts:
        cells = []
        for arm in arms:
            tput = med(per_round(arm, count, "tput"))
            rel = tput / med(per_round(arm, BASE, "tput"))
            cells.append(f"{tput:.0f} ({common.ratio(rel)})")
            cells.append(f"{common.ms(med(per_round(arm, count, 'p50')))} / "
                         f"{common.ms(med(per_round(arm, count, 'p99')))} ms")
        pairs = list(zip(runs["hotswap"][count], runs[PEER][count], strict=True))
        tput_r = [h.output_tokens_per_s / p.output_tokens_per_s for h, p in pairs]
        p99_r = [h.ttft["p99"] / p.ttft["p99"] for h, p in pairs]
        cells.append(vs_vllm.fmt(tput_r))
        cells.append(vs_vllm.fmt(p99_r))
        lines.append(f"| {label(count)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(counts: list[int], arms: tuple[str, ...], runs: Runs, path: Path) -> None:
    plt = common.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    x = list(range(len(counts)))
    for arm in arms:
        base = med([s.output_tokens_per_s for s in runs[arm][BASE]])
        left.plot(x, [med([s.output_tokens_per_s for s in runs[arm][c]]) / base
                      for c in counts], marker="o", label=arm)
        right.plot(x, [med([s.ttft["p99"] for s in runs[arm][c]]) * 1e3 for c in counts],
                   marker="o", label=arm)
    for ax, title in ((left, "output tok/s relative to base-only (higher is better)"),
                      (right, "TTFT p99, ms (lower is better)")):
        ax.set_xticks(x, [label(c) for c in counts], rotation=15)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    common.save_figure(fig, path)


def record(cfg: vs_vllm.Config, counts: list[int], arms: tuple[str, ...], runs: Runs,
           png: Path) -> None:
    import datetime as dt

    stock = " --stock" if "vllm" in arms else ""
    text = f"""
## Adapter count: 1 to 64 distinct adapters in the traffic ({dt.date.today()})

Machine: {common.machine()}; load average at the end {common.load_average()}.
Command: `python bench/adapter_count.py --rounds {cfg.rounds} --counts
{",".join(map(str, counts))} --requests {cfg.requests} --concurrency {cfg.concurrency}
--tokens {cfg.tokens} --dtype {cfg.dtype} --max-loras {cfg.max_loras} --max-cpu-loras
{cfg.max_cpu_loras}{stock}`.
Bundled model ({cfg.dtype}), rank-16 LoRAs on all projections; per point {cfg.requests}
streaming completions of {cfg.tokens} forced tokens, {cfg.concurrency} in flight, request
i to adapter i mod N; `max_loras` {cfg.max_loras}, `max_cpu_loras` {cfg.max_cpu_loras},
KV cache {vs_vllm.KV_BYTES >> 20} MiB for both servers; `{PEER}` is vLLM's OpenAI server
with hotswap's CPU LoRA plugin and engine arguments (the same engine configuration as
hotswap's, see `bench/vs_vllm.py`). Absolute values are medians over
{cfg.rounds} rounds (one server per arm and round, arm order rotating); the ratio columns
give one value per round.

{table(counts, arms, runs)}

![adapter count]({common.repo_relative(png)})
"""
    common.record_section(text)


def main() -> None:
    common.setup_logging()
    cfg, counts, arms = parse_args()
    from hotswap.server.config import home_from_env
    from hotswap.server.model_prep import prepare_bundled_model

    model = prepare_bundled_model(home_from_env())
    runs: Runs = {arm: {c: [] for c in counts} for arm in arms}
    with tempfile.TemporaryDirectory(prefix="adapter-count-") as tmp:
        work = Path(tmp)
        adapters = vs_vllm.make_adapters(work, cfg.adapters, cfg.dtype)
        names = list(adapters)
        for r in range(cfg.rounds):
            for arm in arms[r % len(arms):] + arms[:r % len(arms)]:
                with vs_vllm.serving(arm, cfg, model, adapters, work) as (url, _):
                    for count in counts:
                        s = vs_vllm.run(url, workload(cfg, names, count), cfg.concurrency,
                                        f"round {r + 1} {arm}, {label(count)}")
                        runs[arm][count].append(s)
                        common.console.print(
                            f"round {r + 1} {arm}, {label(count)}: "
                            f"{s.output_tokens_per_s:.0f} tok/s, TTFT p50 "
                            f"{common.ms(s.ttft['p50'])} ms, p99 {common.ms(s.ttft['p99'])} ms")
    common.console.print(table(counts, arms, runs))
    png = common.stamped_png("adapter_count")
    plot(counts, arms, runs, png)
    common.console.print(f"plot: {common.repo_relative(png)}")
    if cfg.record:
        record(cfg, counts, arms, runs, png)


if __name__ == "__main__":
    main()
