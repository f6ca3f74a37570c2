"""What serving prompt and prefix adapters costs base-model traffic: the same base-only
load on `hotswap serve` with prompt embeddings and the prefix KV connector on (the
default) and off (`--no-prompt-adapters --no-prefix-adapters`), servers one after the
other in interleaved rounds, printed as ratios.

    python bench/peft_engine_cost.py [--rounds 2] [--requests 48] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from rich.table import Table

from common import (
    console,
    load_average,
    machine,
    progress_bar,
    ratio,
    record_section,
    running_server,
    setup_logging,
)

CONFIGS = {
    "prompt + prefix adapters on (default)": [],
    "off (--no-prompt-adapters --no-prefix-adapters)": ["--no-prompt-adapters",
                                                        "--no-prefix-adapters"],
}
MAX_TOKENS = 64
PROMPTS = ["Tell me about the sea.", "Write a short poem about autumn.",
           "Explain what a compiler does.", "List three uses of copper."]


async def _load(url: str, requests: int, concurrency: int) -> float:
    """Output tokens per second of ``requests`` base-model completions, ``concurrency``
    at a time."""
    gate = asyncio.Semaphore(concurrency)
    tokens = 0
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        models = (await client.get("/v1/models")).json()["data"]
        base = next(m["id"] for m in models if m.get("kind") == "base")

        async def one(i: int) -> None:
            nonlocal tokens
            async with gate:
                resp = await client.post("/v1/completions", json={
                    "model": base, "prompt": PROMPTS[i % len(PROMPTS)],
                    "max_tokens": MAX_TOKENS, "ignore_eos": True, "temperature": 0})
                resp.raise_for_status()
                tokens += resp.json()["usage"]["completion_tokens"]

        await asyncio.gather(*(one(i) for i in range(concurrency)))  # warm-up
        tokens = 0
        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(requests)))
        return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    setup_logging()
    results: dict[str, list[float]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp, progress_bar() as bar:
        task = bar.add_task("servers", total=args.rounds * len(CONFIGS))
        for round_no in range(args.rounds):
            for index, (name, flags) in enumerate(CONFIGS.items()):
                store = Path(tmp) / f"store-{round_no}-{index}"
                log_path = Path(tmp) / "server.log"
                with running_server(["--store", str(store), *flags], log_path) as (url, _):
                    results[name].append(asyncio.run(_load(url, args.requests,
                                                           args.concurrency)))
                bar.advance(task)
    on, off = (results[n] for n in CONFIGS)
    table = Table("configuration", "output tok/s per round", "median")
    for name, values in results.items():
        table.add_row(name, ", ".join(f"{v:.0f}" for v in values),
                      f"{statistics.median(values):.0f}")
    console.print(table)
    cost = statistics.median(on) / statistics.median(off)
    console.print(f"base-model throughput with prompt and prefix adapters on: {ratio(cost)} "
                  "of off")
    record_section(
        f"\n## Base-model cost of prompt and prefix adapter support ({time.strftime('%Y-%m-%d')})"
        f"\n\n`python bench/peft_engine_cost.py --rounds {args.rounds} --requests "
        f"{args.requests} --concurrency {args.concurrency}`; {machine()}, load "
        f"{load_average()}; bundled model, bf16, base-only completions of {MAX_TOKENS} "
        "tokens, servers one after the other in interleaved rounds.\n\n"
        "| configuration | output tok/s per round |\n|---|---:|\n"
        + "".join(f"| {n} | {', '.join(f'{v:.0f}' for v in vs)} |\n"
                  for n, vs in results.items())
        + f"\nOn / off: **{ratio(cost)}**.\n")


if __name__ == "__main__":
    main()
