"""Cold start: time to first token of the first request to an adapter, against the same
adapter warm, and the adapter's way to the engine split into its phases.

One ``hotswap serve`` (bundled model, a fresh temporary store, ``max_loras`` and
``max_cpu_loras`` both ``--cache``), an idle server, one request at a time. Per adapter
(rank-16 LoRAs on all projections, about 10 MB each):

1. upload it (``POST /v1/adapters``): what stores it; timed, and split by
   ``hotswap_adapter_load_seconds`` into ``fetch`` (receiving the body) and ``admission``
   (checking and storing it);
2. **cold from the store**: the first request to it (the engine load happens inside it;
   the ``engine`` phase of the same histogram times that load alone);
3. **settling**: ``--settle`` more requests to it, timed apart. hotswap's CPU LoRA
   plugin makes the oneDNN primitives of a new adapter's packs over its first steps, not
   in the first one (plugins/cpu_lora/packing.py), and these requests run while it does;
4. **warm**: ``--warm`` more requests to it, the median TTFT.

Then, with more adapters used than the engine's host cache holds (``--adapters`` >
``--cache``), the first adapters have been evicted by the engine's LRU:
5. **after eviction**: one request to each evicted adapter (read from disk again).

Last, ``--hub`` adapters published on a local hub endpoint (the test suite's fake Hugging
Face Hub, ``tests/support/fake_hub.py``, on loopback; the server's own huggingface_hub
client pulls from it, ``--hub-autoload``):
6. **cold from the hub**: the first request naming the repo (pull, admission, engine load
   all inside it), against the same adapter's warm TTFT; split by the same histogram
   (``fetch`` and ``admission`` of source ``hub``).

Requests are completions of ``--prompt-tokens`` token ids (a fresh seeded prompt each, so
vLLM's prefix cache serves none of them) and 2 forced output tokens. The goal (issue 16):
cold from the local store <= warm + 100 ms.

    python bench/cold_start.py               # 8 adapters, cache 4, 4 from the hub; records
    python bench/cold_start.py --adapters 5 --hub 2 --no-record
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

import common
from loadgen_core.client import Request, send

# Appended, not prepended: tests/support has modules (http.py) that would shadow the stdlib.
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests" / "support"))
from fake_hub import FakeHub, serving  # the suite's local hub endpoint (stdlib only)

SERVED = "smollm2"
GOAL_S = 0.100  # cold <= warm + 100 ms
PHASES = (("fetch", "upload"), ("admission", "upload"), ("engine", "store"))
HUB_PHASES = (("fetch", "hub"), ("admission", "hub"), ("engine", "store"))
HUB_OWNER = "bench"


@dataclass(frozen=True)
class Config:
    adapters: int
    cache: int
    warm: int
    prompt_tokens: int
    dtype: str
    record: bool
    hub: int = 0
    settle: int = 8


@dataclass
class Adapter:
    name: str
    upload_s: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    cold_s: float = 0.0
    settle_s: list[float] = field(default_factory=list)
    warm_s: list[float] = field(default_factory=list)
    evicted_s: float | None = None

    @property
    def warm_median(self) -> float:
        return statistics.median(self.warm_s)


def parse_args() -> Config:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--adapters", type=int, default=8)
    p.add_argument("--cache", type=int, default=4,
                   help="the server's --max-loras and --max-cpu-loras (default: %(default)s)")
    p.add_argument("--settle", type=int, default=8,
                   help="requests per adapter between the cold one and the warm ones, "
                   "timed apart (default: %(default)s)")
    p.add_argument("--warm", type=int, default=5, help="warm requests per adapter")
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--dtype", default=common.fast_dtype(),
                   help="default: bfloat16 if the CPU has native bf16, else float32")
    p.add_argument("--hub", type=int, default=4,
                   help="adapters pulled from a local hub endpoint (0: none)")
    p.add_argument("--no-record", dest="record", action="store_false")
    a = p.parse_args()
    if a.adapters <= a.cache:
        p.error("--adapters must exceed --cache, or nothing is evicted")
    return Config(a.adapters, a.cache, a.warm, a.prompt_tokens, a.dtype, a.record, a.hub,
                  a.settle)


def phase_sums(client: httpx.Client,
               phases: tuple[tuple[str, str], ...] = PHASES) -> dict[str, float]:
    """``hotswap_adapter_load_seconds`` sums by phase, from ``/metrics``."""
    text = client.get("/metrics").raise_for_status().text
    out = {phase: 0.0 for phase, _ in phases}
    for family in text_string_to_metric_families(text):
        if family.name != "hotswap_adapter_load_seconds":
            continue
        for s in family.samples:
            key = (s.labels.get("phase"), s.labels.get("source"))
            if s.name.endswith("_sum") and key in phases:
                out[key[0]] += s.value
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after}


class Probe:
    """Single streaming requests, TTFT each, a fresh seeded prompt of the same length every
    time, so only the adapter's state differs between cold and warm. Not one prompt for
    all: vLLM's prefix cache would then serve every warm request's prefill from cache,
    while an adapter's first request (a new cache key: the adapter is part of it) computes
    its prefill, and the cold start would be charged a prefill any new prompt pays."""

    def __init__(self, url: str, prompt_tokens: int) -> None:
        self.rng = random.Random(0)
        self.url = url
        self.prompt_tokens = prompt_tokens

    def ttft(self, model: str) -> float:
        prompt = [self.rng.randrange(10, 1000) for _ in range(self.prompt_tokens)]

        async def one() -> float:
            async with httpx.AsyncClient(base_url=self.url, timeout=120) as client:
                result = await send(client, Request(0, model, prompt, 2))
            if result.error or result.ttft is None:
                raise SystemExit(f"request to {model} failed: {result.error}")
            return result.ttft

        return asyncio.run(one())


def upload(client: httpx.Client, adapter: Adapter, index: int, dtype: str) -> None:
    archive = common.tar_bytes(common.lora_files(
        common.BUNDLED_MODEL, rank=16, target_modules=common.ALL_MODULES, seed=500 + index,
        std=0.02, dtype=dtype))
    before = phase_sums(client)
    started = time.perf_counter()
    resp = client.post("/v1/adapters", params={"name": adapter.name}, content=archive,
                       headers={"content-type": "application/octet-stream"}, timeout=120)
    adapter.upload_s = time.perf_counter() - started
    if resp.status_code != 201:
        raise SystemExit(f"upload of {adapter.name}: {resp.status_code} {resp.text}")
    adapter.phases = delta(phase_sums(client), before)


def publish(hub: FakeHub, root: Path, count: int, dtype: str) -> list[Adapter]:
    """``count`` adapters like the uploaded ones (other seeds) as hub repos."""
    out = []
    for i in range(count):
        files = common.lora_files(common.BUNDLED_MODEL, rank=16,
                                  target_modules=common.ALL_MODULES, seed=900 + i, std=0.02,
                                  dtype=dtype)
        repo = f"{HUB_OWNER}/lora-{i + 1}"
        hub.add(repo, common.write_dir(root / f"hub-{i + 1}", files))
        out.append(Adapter(repo))
    return out


def settle_then_warm(probe: Probe, a: Adapter, cfg: Config) -> None:
    """The requests after an adapter's cold one: ``--settle`` settling, ``--warm`` warm."""
    a.settle_s = [probe.ttft(a.name) for _ in range(cfg.settle)]
    a.warm_s = [probe.ttft(a.name) for _ in range(cfg.warm)]


def measure_hub(probe: Probe, url: str, adapters: list[Adapter], cfg: Config) -> None:
    """First request naming each hub repo (pulled, admitted, loaded inside it), then warm."""
    with httpx.Client(base_url=url) as client, common.progress_bar() as bar:
        task = bar.add_task("cold from the hub, warm", total=len(adapters))
        for a in adapters:
            before = phase_sums(client, HUB_PHASES)
            a.cold_s = probe.ttft(a.name)
            a.phases = delta(phase_sums(client, HUB_PHASES), before)
            settle_then_warm(probe, a, cfg)
            bar.advance(task)


def measure(cfg: Config, url: str) -> tuple[list[Adapter], list[float], Probe]:
    probe = Probe(url, cfg.prompt_tokens)
    base = [probe.ttft(SERVED) for _ in range(cfg.warm + 1)][1:]  # the first warms up
    adapters = [Adapter(f"cold-{i + 1}") for i in range(cfg.adapters)]
    with httpx.Client(base_url=url) as client, common.progress_bar() as bar:
        task = bar.add_task("upload, cold, warm", total=cfg.adapters)
        for i, a in enumerate(adapters):
            upload(client, a, i, cfg.dtype)
            before = phase_sums(client)
            a.cold_s = probe.ttft(a.name)
            a.phases["engine"] = delta(phase_sums(client), before)["engine"]
            settle_then_warm(probe, a, cfg)
            bar.advance(task)
        # The engine's LRU holds the last `cache` adapters used: the first ones are out.
        evicted = adapters[:cfg.adapters - cfg.cache]
        task = bar.add_task("after eviction", total=len(evicted))
        for a in evicted:
            a.evicted_s = probe.ttft(a.name)
            bar.advance(task)
    return adapters, base, probe


def med(values: list[float]) -> float:
    return statistics.median(values)


TTFT_HEADER = ["| request | TTFT median | min | max | minus warm (median) |",
               "|---|---:|---:|---:|---:|"]


def ttft_row(label: str, values: list[float], excess: float | None = None) -> str:
    """One TTFT table row: median, min, max of ``values`` and, if given, the excess."""
    tail = f" {common.ms(excess)} ms" if excess is not None else ""
    return (f"| {label} | {common.ms(med(values))} ms | {common.ms(min(values))} | "
            f"{common.ms(max(values))} |{tail} |")


def settling_row(adapters: list[Adapter], warm: float) -> list[str]:
    """The requests after the cold one, each adapter's median (none if not measured)."""
    if not adapters[0].settle_s:
        return []
    settling = [med(a.settle_s) for a in adapters]
    return [ttft_row(f"adapter, settling (the {len(adapters[0].settle_s)} requests after "
                     "the cold one)", settling, med(settling) - warm)]


def hub_table(adapters: list[Adapter]) -> list[str]:
    """The hub rows: TTFT against each adapter's own warm TTFT, and the pull's phases."""
    if not adapters:
        return []
    excess = [a.cold_s - a.warm_median for a in adapters]
    return [
        "",
        f"From the hub endpoint ({len(adapters)} repos on a local fake hub over loopback: "
        "what a pull costs beyond the network):",
        "",
        *TTFT_HEADER,
        ttft_row("adapter, warm", [a.warm_median for a in adapters]),
        ttft_row("adapter, cold from the hub (pull + admission + engine load)",
                 [a.cold_s for a in adapters], med(excess)),
        *settling_row(adapters, med([a.warm_median for a in adapters])),
        "",
        "| fetch (download) | admission (check, store) | engine load |",
        "|---:|---:|---:|",
        "| " + " | ".join(f"{common.ms(med([a.phases[p] for a in adapters]))} ms"
                         for p, _ in HUB_PHASES) + " |",
    ]


def table(adapters: list[Adapter], base: list[float], hub: list[Adapter]) -> str:
    warm = med([a.warm_median for a in adapters])
    evicted = [a.evicted_s for a in adapters if a.evicted_s is not None]
    excess = [a.cold_s - a.warm_median for a in adapters]
    lines = [
        *TTFT_HEADER,
        ttft_row("base model, warm", base),
        ttft_row("adapter, warm", [a.warm_median for a in adapters]),
        ttft_row("adapter, cold from the local store", [a.cold_s for a in adapters],
                 med(excess)),
        *settling_row(adapters, warm),
        ttft_row("adapter, after eviction from the engine's host cache", evicted,
                 med(evicted) - warm),
        "",
        "Getting an adapter in, medians per adapter:",
        "",
        "| upload (wall, client) | fetch (body received) | admission (check, store) | "
        "engine load (in the cold request) |",
        "|---:|---:|---:|---:|",
        f"| {common.ms(med([a.upload_s for a in adapters]))} ms | "
        + " | ".join(f"{common.ms(med([a.phases[p] for a in adapters]))} ms"
                     for p, _ in PHASES) + " |",
        "",
        f"Goal cold <= warm + {GOAL_S * 1e3:.0f} ms: "
        f"{'met' if med(excess) <= GOAL_S else 'NOT met'} (cold - warm: median "
        f"{common.ms(med(excess))} ms, worst {common.ms(max(excess))} ms).",
        *hub_table(hub),
    ]
    return "\n".join(lines)


def plot(adapters: list[Adapter], path: Path) -> None:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    x = list(range(1, len(adapters) + 1))
    ax.plot(x, [a.cold_s * 1e3 for a in adapters], "o-", label="cold (first request)")
    ax.plot(x, [a.warm_median * 1e3 for a in adapters], "s-", label="warm (median)")
    ev = [(i, a.evicted_s) for i, a in zip(x, adapters, strict=True) if a.evicted_s]
    ax.plot([i for i, _ in ev], [v * 1e3 for _, v in ev], "^", label="after eviction")
    ax.plot(x, [a.phases["engine"] * 1e3 for a in adapters], "x:", label="engine load")
    ax.set_xlabel("adapter (in upload order)")
    ax.set_ylabel("ms")
    ax.set_ylim(bottom=0)
    ax.set_title("TTFT of one request, idle server")
    ax.grid(alpha=0.3)
    ax.legend()
    common.save_figure(fig, path)


def record(cfg: Config, text: str, png: Path) -> None:
    import datetime as dt

    common.record_section(f"""
## Cold start: first request to an adapter vs warm ({dt.date.today()})

Machine: {common.machine()}; load average at the end {common.load_average()}.
Command: `python bench/cold_start.py --adapters {cfg.adapters} --cache {cfg.cache} --settle
{cfg.settle} --warm {cfg.warm} --prompt-tokens {cfg.prompt_tokens} --dtype {cfg.dtype}
--hub {cfg.hub}`.
Bundled model ({cfg.dtype}), {cfg.adapters} rank-16 LoRAs on all projections uploaded one
by one into a fresh store, `--max-loras` and `--max-cpu-loras` {cfg.cache}; an idle server,
one streaming completion at a time (a fresh {cfg.prompt_tokens}-token prompt each, 2 output tokens).

{text}

![cold start]({common.repo_relative(png)})
""")


def main() -> None:
    common.setup_logging()
    cfg = parse_args()
    with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp, serving(FakeHub()) as hub:
        hub_adapters = publish(hub, Path(tmp), cfg.hub, cfg.dtype)
        args = ["--store", str(Path(tmp) / "store"), "--dtype", cfg.dtype,
                "--served-model-name", SERVED, "--max-loras", str(cfg.cache),
                "--max-cpu-loras", str(cfg.cache), "--hub-allow", HUB_OWNER, "--hub-autoload"]
        # The server inherits the environment: its huggingface_hub talks to the local hub.
        os.environ.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_TELEMETRY="1")
        with common.running_server(args, Path(tmp) / "server.log") as (url, _):
            adapters, base, probe = measure(cfg, url)
            measure_hub(probe, url, hub_adapters, cfg)
    text = table(adapters, base, hub_adapters)
    common.console.print(text)
    png = common.stamped_png("cold_start")
    plot(adapters, png)
    common.console.print(f"plot: {common.repo_relative(png)}")
    if cfg.record:
        record(cfg, text, png)


if __name__ == "__main__":
    main()
