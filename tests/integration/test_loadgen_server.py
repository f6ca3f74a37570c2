"""bench/loadgen_core and bench/loadgen.py against the real server: multi-adapter traffic,
streamed, every request answered with exactly the tokens it asked for, timings that are
consistent with each other; the CLI writes its JSON and plot."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.bench_core import BENCH, load_bench_package
from support.server import ServerInfo

pytestmark = pytest.mark.engine

lg = load_bench_package("loadgen_core")


def workload(server: ServerInfo, requests: int) -> object:
    return lg.make_workload(lg.WorkloadSpec(
        models=(server.base_name, "lora-a", "lora-b"), requests=requests, alpha=1.0,
        prompt_mean=24, prompt_std=6, output_mean=6, seed=7))


def test_closed_and_open_loop(server: ServerInfo) -> None:
    work = workload(server, 12)
    seen: list[int] = []
    results, wall = asyncio.run(lg.run_closed(server.url, work, 4, api_key=server.api_key,
                                              on_progress=lambda d, t: seen.append(d)))
    assert [r.error for r in results] == [None] * 12
    assert seen == list(range(1, 13))
    for r in results:
        assert r.output_tokens == 6  # min_tokens = max_tokens: forced to the end
        assert r.ttft is not None and r.latency is not None and 0 < r.ttft <= r.latency
    summary = lg.summarize(results, wall)
    assert summary.output_tokens_per_s == pytest.approx(72 / wall)
    assert summary.ttft["p50"] <= summary.ttft["p99"]

    opened, _ = asyncio.run(lg.run_open(server.url, workload(server, 6), 20.0,
                                                api_key=server.api_key))
    assert [r.error for r in opened] == [None] * 6
    # Sent at their arrival times, not all at once: the last one left after the first.
    assert max(r.sent for r in opened) - min(r.sent for r in opened) > 0.05


def test_errors_are_counted_not_raised(server: ServerInfo) -> None:
    work = lg.make_workload(lg.WorkloadSpec(models=("no-such-adapter",), requests=2,
                                            output_mean=2))
    results, wall = asyncio.run(lg.run_closed(server.url, work, 2, api_key=server.api_key))
    summary = lg.summarize(results, wall)
    assert summary.errors == 2 and "HTTP 404" in summary.error_samples[0]


def test_cli_writes_json_and_plot(server: ServerInfo, tmp_path: Path) -> None:
    out, png = tmp_path / "run.json", tmp_path / "run.png"
    done = subprocess.run(
        [sys.executable, str(BENCH / "loadgen.py"), "--url", server.url, "--api-key",
         server.api_key or "", "--model", server.base_name, "--model", "lora-a",
         "--requests", "6", "--concurrency", "3", "--output-mean", "4",
         "--prompt-mean", "16", "--json", str(out), "--plot", str(png)],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    runs = json.loads(out.read_text())
    (only,) = runs.values()
    assert only["requests"] == 6 and only["errors"] == 0
    assert only["output_tokens_per_s"] > 0
    assert png.stat().st_size > 1000
    assert "output tok/s" in done.stdout
