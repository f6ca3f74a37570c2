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

    python bench/registry_scale.py                       # 10,100,1000; appends to BENCHMARKS.md
    python bench/registry_scale.py --counts 10,100 --reps 50 --no-record
    python bench/registry_scale.py --url http://127.0.0.1:8000 --store ~/.cache/hotswap/store

Writes ``bench/results/registry_scale.png`` (``--png``) and appends a section to
``BENCHMARKS.md`` (``--no-record``: neither).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import itertools
import json
import logging
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from hotswap.adapters.store import Store
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
PNG = REPO / "bench" / "results" / "registry_scale.png"
START_TIMEOUT_S = 420
GOAL = 1.5
NAME_PREFIX = "scale"
# SmolLM2-135M: hidden size 576, 30 decoder layers; q_proj is 576 -> 576.
HIDDEN, LAYERS = 576, 30
BASE_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"

log = logging.getLogger("registry_scale")
# Wide enough for the tables when the output is a file or a pipe (rich assumes 80 then).
console = Console(width=None if sys.stdout.isatty() else 132)


@dataclass
class Config:
    counts: list[int]
    reps: int
    list_reps: int
    warmup: int
    rounds: int
    rank: int
    url: str | None
    store: Path | None
    server_pid: int | None
    keep_store: bool
    record: bool
    png: Path
    note: str
    seed: int


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


# --- the server --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def running_server(store: Path, log_path: Path) -> Iterator[tuple[str, int]]:
    """``hotswap serve`` on the bundled model with ``store``; yields (url, pid)."""
    port = free_port()
    hotswap = Path(sys.executable).parent / "hotswap"
    # warning: no access-log line per request (thousands here), which would also be timed.
    cmd = [
        str(hotswap),
        "serve",
        "--store",
        str(store),
        "--port",
        str(port),
        "--max-model-len",
        "512",
        "--log-level",
        "warning",
    ]
    log.info("starting %s", " ".join(cmd[1:]))
    with log_path.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        with console.status("waiting for the engine (GET /ready)"):
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"server exited ({proc.returncode}):\n{tail(log_path)}")
                if time.monotonic() - started > START_TIMEOUT_S:
                    raise SystemExit(f"server not ready in {START_TIMEOUT_S}s:\n{tail(log_path)}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                        break
                time.sleep(1)
        log.info("server ready in %.0f s (pid %d)", time.monotonic() - started, proc.pid)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- adapters ----------------------------------------------------------------------------


def adapter_archive(index: int, rank: int, seed: int) -> bytes:
    """A tar of a distinct PEFT LoRA dir: rank ``rank`` on q_proj of every layer, bf16."""
    import torch
    from safetensors.torch import save

    gen = torch.Generator().manual_seed(seed * 1_000_003 + index)
    tensors = {}
    for layer in range(LAYERS):
        key = f"base_model.model.model.layers.{layer}.self_attn.q_proj"
        tensors[f"{key}.lora_A.weight"] = (torch.randn(rank, HIDDEN, generator=gen) * 0.01).to(
            torch.bfloat16
        )
        tensors[f"{key}.lora_B.weight"] = (torch.randn(HIDDEN, rank, generator=gen) * 0.01).to(
            torch.bfloat16
        )
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": rank,
        "target_modules": ["q_proj"],
        "lora_dropout": 0.0,
        "bias": "none",
        "base_model_name_or_path": BASE_MODEL_ID,
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (
            ("adapter_config.json", json.dumps(config).encode()),
            ("adapter_model.safetensors", save(tensors)),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def adapter_name(index: int) -> str:
    return f"{NAME_PREFIX}-{index:04d}"


def stored_names(client: httpx.Client) -> set[str]:
    resp = client.get("/v1/adapters")
    resp.raise_for_status()
    return {a["name"] for a in resp.json()["data"]}


def register_up_to(
    client: httpx.Client, target: int, state: Registered, cfg: Config, progress: Progress
) -> None:
    """Upload ``scale-NNNN`` adapters until the store holds ``target`` names."""
    missing = target - state.total
    if missing <= 0:
        return
    task = progress.add_task(f"registering up to {target}", total=missing)
    while state.total < target:
        index = state.next_index
        state.next_index += 1
        name = adapter_name(index)
        if name in state.names:
            continue  # left by an earlier run against the same --url store
        archive = adapter_archive(index, cfg.rank, cfg.seed)
        started = time.perf_counter()
        resp = client.post(
            "/v1/adapters",
            params={"name": name, "tag": "latest"},
            content=archive,
            headers={"content-type": "application/octet-stream"},
            timeout=120,
        )
        if resp.status_code != 201:
            raise SystemExit(f"upload of {name} failed: {resp.status_code} {resp.text}")
        state.upload_s.append(time.perf_counter() - started)
        state.names.add(name)
        state.ours.append(name)
        state.total += 1
        progress.advance(task)
    progress.remove_task(task)


@dataclass
class Registered:
    names: set[str]  # every name in the store
    total: int
    ours: list[str] = field(default_factory=list)  # names this run uploaded, in order
    next_index: int = 0
    upload_s: list[float] = field(default_factory=list)


# --- measuring ---------------------------------------------------------------------------

OPS = {
    "http_resolve": "GET /v1/adapters/{name}",
    "store_resolve": "Store.resolve(name)",
    "http_models": "GET /v1/models",
    "http_adapters": "GET /v1/adapters",
    "store_list": "Store.list()",
    "http_health": "GET /health (control)",
}
POINT_OPS = ("http_resolve", "store_resolve", "http_health")
LIST_OPS = ("http_models", "http_adapters", "store_list")
STORE_OPS = ("store_resolve", "store_list")
METRICS = {
    "wall": "wall-clock latency",
    "cpu": "CPU time per call (HTTP: the server process, all threads; Store: this thread)",
}


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
Op = Callable[[], object]


def make_ops(
    client: httpx.Client, store: Store | None, names: list[str], rng: random.Random
) -> dict[str, Op]:
    """The measured calls. Each returns what it got (a response, a manifest, entries)."""

    def get(path: str) -> httpx.Response:
        resp = client.get(path)
        if resp.status_code != 200:
            raise SystemExit(f"GET {path}: {resp.status_code} {resp.text[:300]}")
        return resp

    ops: dict[str, Op] = {
        "http_resolve": lambda: get(f"/v1/adapters/{rng.choice(names)}"),
        "http_models": lambda: get("/v1/models"),
        "http_adapters": lambda: get("/v1/adapters"),
        "http_health": lambda: get("/health"),
    }
    if store is not None:
        ops["store_resolve"] = lambda: store.resolve(rng.choice(names))
        ops["store_list"] = store.list
    return ops


def process_cpu_ns(pid: int) -> int:
    """CPU time of every live thread of ``pid`` (ns, from the scheduler's own accounting:
    /proc's utime ticks are 10 ms, too coarse for a batch of fast requests)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with (
            contextlib.suppress(FileNotFoundError, ProcessLookupError),
            open(f"/proc/{pid}/task/{task}/schedstat") as f,
        ):
            total += int(f.read().split()[0])
    return total


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
        # Steady state: every manifest cached, as in a server that has listed them once
        # (the listings above did that for the server). A cold read parses JSON instead.
        for name in names:
            store.resolve(name)
    clocks: dict[str, Callable[[], int]] = {op: time.thread_time_ns for op in STORE_OPS}
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


# --- output ------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}" if seconds < 0.01 else f"{seconds * 1e3:.1f}"


def verdict(ratio: float) -> str:
    return "[green]yes[/]" if ratio <= GOAL else "[red]no[/]"


def has(results: Results, op: str, metric: str) -> bool:
    first = results[min(results)]
    return op in first and (metric == "wall" or bool(first[op].cpu))


def cell(sample: Sample, metric: str) -> str:
    if metric == "wall":
        return f"{ms(sample.value('wall'))} ({ms(sample.p90)})"
    return ms(sample.value("cpu"))


def latency_table(results: Results, metric: str) -> Table:
    counts = sorted(results)
    ref = counts[0]
    unit = "median (p90) in ms" if metric == "wall" else "median over batches, ms"
    table = Table(title=f"{METRICS[metric][0].upper()}{METRICS[metric][1:]}, {unit}")
    table.add_column("operation")
    for c in counts:
        table.add_column(f"{c}", justify="right")
    for c in counts[1:]:
        table.add_column(f"{c}/{ref}", justify="right")
    table.add_column(f"<= {GOAL}x", justify="center")
    for op, label in OPS.items():
        if not has(results, op, metric):
            continue
        s = [results[c][op] for c in counts]
        ratios = [x.value(metric) / s[0].value(metric) for x in s[1:]]
        table.add_row(
            label,
            *(cell(x, metric) for x in s),
            *(f"{r:.2f}x" for r in ratios),
            verdict(max(ratios)) if ratios else "",
        )
    return table


def per_entry(s: list[Sample], metric: str) -> list[float]:
    return [x.value(metric) / max(x.entries, 1) for x in s]


def marginal_costs(s: list[Sample], metric: str) -> list[float]:
    """Cost added per added entry between consecutive counts."""
    return [
        (b.value(metric) - a.value(metric)) / max(b.entries - a.entries, 1)
        for a, b in itertools.pairwise(s)
    ]


def per_entry_table(results: Results) -> Table:
    counts = sorted(results)
    ref = counts[0]
    table = Table(
        title="Listings: cost per entry in µs (median / entries) and marginal cost of each "
        "added entry (the step from the previous count)"
    )
    table.add_column("listing")
    table.add_column("")
    for c in counts:
        table.add_column(f"{c}", justify="right")
    for c in counts[1:]:
        table.add_column(f"{c}/{ref}", justify="right")
    table.add_column(f"<= {GOAL}x", justify="center")
    for op in LIST_OPS:
        if op not in results[ref]:
            continue
        s = [results[c][op] for c in counts]
        first = True
        for metric in METRICS:
            if not has(results, op, metric):
                continue
            per = per_entry(s, metric)
            ratios = [p / per[0] for p in per[1:]]
            table.add_row(
                OPS[op] if first else "",
                f"per entry, {metric}",
                *(f"{p * 1e6:.1f}" for p in per),
                *(f"{r:.2f}x" for r in ratios),
                verdict(max(ratios)) if ratios else "",
            )
            first = False
            marginal = marginal_costs(s, metric)
            m_ratios = [m / marginal[0] for m in marginal[1:]]
            table.add_row(
                "",
                f"marginal, {metric}",
                "",
                *(f"{m * 1e6:.1f}" for m in marginal),
                "",
                *(f"{r:.2f}x" for r in m_ratios),
                verdict(max(m_ratios)) if m_ratios else "",
            )
        if op not in STORE_OPS:
            table.add_row(
                "",
                "body KiB",
                *(f"{x.body_bytes / 1024:.0f}" for x in s),
                *[""] * (len(counts) - 1),
                "",
            )
    return table


def markdown(results: Results) -> str:
    counts = sorted(results)
    ref = counts[0]
    lines = []
    for metric, label in METRICS.items():
        unit = "median (p90), ms" if metric == "wall" else "median over batches, ms"
        lines += [
            f"{label[0].upper()}{label[1:]}, {unit}:",
            "",
            "| operation | "
            + " | ".join(f"{c} adapters" for c in counts)
            + " | "
            + " | ".join(f"{c} / {ref}" for c in counts[1:])
            + f" | <= {GOAL}x |",
            "|---" + "|---:" * (2 * len(counts) - 1) + "|:-:|",
        ]
        for op, name in OPS.items():
            if not has(results, op, metric):
                continue
            s = [results[c][op] for c in counts]
            ratios = [x.value(metric) / s[0].value(metric) for x in s[1:]]
            lines.append(
                f"| `{name}` | "
                + " | ".join(cell(x, metric) for x in s)
                + " | "
                + " | ".join(f"{r:.2f}x" for r in ratios)
                + " | "
                + ("yes" if ratios and max(ratios) <= GOAL else "no")
                + " |"
            )
        lines.append("")
    steps = " / ".join(f"{a}->{b}" for a, b in itertools.pairwise(counts))
    lines += [
        "Listings per entry (median / entries, µs) and marginal cost of each added entry (µs):",
        "",
        "| listing | clock | "
        + " | ".join(f"{c}" for c in counts)
        + " | "
        + " | ".join(f"{c} / {ref}" for c in counts[1:])
        + f" | marginal {steps} |",
        "|---|---" + "|---:" * (2 * len(counts)) + "|",
    ]
    for op in LIST_OPS:
        for metric in METRICS:
            if not has(results, op, metric):
                continue
            s = [results[c][op] for c in counts]
            per = per_entry(s, metric)
            lines.append(
                f"| `{OPS[op]}` | {metric} | "
                + " | ".join(f"{p * 1e6:.1f}" for p in per)
                + " | "
                + " | ".join(f"{p / per[0]:.2f}x" for p in per[1:])
                + " | "
                + " / ".join(f"{m * 1e6:.1f}" for m in marginal_costs(s, metric))
                + " |"
            )
    return "\n".join(lines)


def plot(results: Results, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = sorted(results)
    ref = counts[0]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    ax_lat = axes[0]
    colors = {op: f"C{i}" for i, op in enumerate(OPS)}
    for op, label in OPS.items():
        if op not in results[ref]:
            continue
        s = [results[c][op] for c in counts]
        med = [x.value("wall") * 1e3 for x in s]
        p90 = [x.p90 * 1e3 for x in s]
        ax_lat.errorbar(
            counts,
            med,
            yerr=[[0] * len(s), [p - m for p, m in zip(p90, med, strict=True)]],
            marker="o",
            capsize=3,
            label=label,
            color=colors[op],
        )
    ax_lat.set_ylabel("median latency, ms (bar: p90)")
    ax_lat.set_title("wall-clock latency", fontsize=9)
    for ax, metric in zip(axes[1:], METRICS, strict=True):
        for op, label in OPS.items():
            if not has(results, op, metric):
                continue
            s = [results[c][op] for c in counts]
            values = [x.value(metric) for x in s]
            if op in LIST_OPS:
                per = per_entry(s, metric)
                ax.plot(
                    counts,
                    [p / per[0] for p in per],
                    marker="s",
                    linestyle=":",
                    color=colors[op],
                    label=f"{label}, per entry",
                )
                ax.plot(counts, [v / values[0] for v in values], color=colors[op], alpha=0.3)
            else:
                ax.plot(
                    counts,
                    [v / values[0] for v in values],
                    marker="o",
                    color=colors[op],
                    label=label,
                )
        ax.axhline(GOAL, color="grey", linestyle="--", linewidth=1, label=f"goal {GOAL}x")
        ax.axhline(1.0, color="grey", linewidth=0.5)
        ax.set_ylabel(f"ratio to {ref} adapters")
        ax.set_title(
            f"{METRICS[metric].split(' (')[0]}: ratio (faint: listings' whole cost)", fontsize=9
        )
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("registered adapters")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def verdicts(results: Results) -> list[str]:
    """The goal, checked on each number the issue names, in plain words."""
    counts = sorted(results)
    ref, top = counts[0], counts[-1]
    out = []
    for op in ("http_resolve", "store_resolve", "http_models"):
        ratios = {
            metric: max(results[c][op].value(metric) for c in counts)
            / results[ref][op].value(metric)
            for metric in METRICS
            if has(results, op, metric)
        }
        if not ratios:
            continue
        out.append(
            f"`{OPS[op]}`: "
            + ", ".join(
                f"{metric} {r:.2f}x ({'meets' if r <= GOAL else 'misses'})"
                for metric, r in ratios.items()
            )
        )
    s = [results[c]["http_models"] for c in counts]
    parts = []
    for metric in METRICS:
        if has(results, "http_models", metric):
            per = per_entry(s, metric)
            r = max(per) / per[0]
            parts.append(
                f"{metric} {r:.2f}x ({'meets' if r <= GOAL else 'misses'}; "
                f"{per[0] * 1e6:.0f} µs at {ref}, {per[-1] * 1e6:.0f} µs at {top})"
            )
    out.append(
        f"`{OPS['http_models']}` per listed model: "
        + ", ".join(parts)
        + ". A listing holds every adapter, so its whole latency can not stay flat; "
        "per entry is the reading of the goal it can meet"
    )
    return out


def command_line(cfg: Config) -> str:
    parts = [
        "python bench/registry_scale.py",
        f"--counts {','.join(map(str, cfg.counts))}",
        f"--reps {cfg.reps}",
        f"--list-reps {cfg.list_reps}",
        f"--rounds {cfg.rounds}",
        f"--rank {cfg.rank}",
    ]
    if cfg.url:
        parts.append(f"--url {cfg.url}")
    if cfg.png != PNG:
        parts.append(f"--png {os.path.relpath(cfg.png)}")
    if cfg.note:
        parts.append(f"--note '{cfg.note}'")
    return " ".join(parts)


def record(cfg: Config, results: Results, state: Registered, png: Path) -> None:
    machine = f"{os.cpu_count()} cores ({platform.machine()}), shared with other work"
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    upload = statistics.median(state.upload_s) * 1e3 if state.upload_s else float("nan")
    note = f"\n{cfg.note}\n" if cfg.note else ""
    checks = "\n".join("- " + v for v in verdicts(results))
    text = f"""
## Adapter registry at scale: resolve and listings vs number of adapters \
({dt.date.today().isoformat()})

`{command_line(cfg)}`
{note}
One `hotswap serve` (bundled model on CPU, `--max-model-len 512`, `--log-level warning`,
a fresh store on the local disk), {machine}, load average {load}. Adapters registered
through `POST /v1/adapters` (tar body; rank-{cfg.rank} LoRA on q_proj of all {LAYERS}
layers, bf16, distinct random weights; median upload {upload:.0f} ms). At each count,
after a warm-up, {cfg.rounds} rounds; in each, every operation runs one batch (its share
of {cfg.reps} calls for point operations, {cfg.list_reps} for listings) in a rotating
order, over one keep-alive HTTP connection. `Store.*` rows: the same store folder opened
in the benchmark process. CPU time per call: the server process's threads (scheduler
accounting) for HTTP, the calling thread for `Store.*`; it does not grow when other work
shares the cores, wall-clock latency does (the `/health` control shows how much).

{markdown(results)}

Against the goal (flat, <= {GOAL}x the {cfg.counts[0]}-adapter case):

{checks}

![Adapter registry at scale]({Path(os.path.relpath(png, REPO)).as_posix()})
"""
    bench_md = REPO / "BENCHMARKS.md"
    with bench_md.open("a") as f:
        f.write(text)


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
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            for count in cfg.counts:
                register_up_to(client, count, state, cfg, progress)
                # Resolve among every name this run registered, old and new alike.
                names = state.ours or sorted(state.names)
                ops = make_ops(client, store, names, rng)
                results[count] = measure_at(count, ops, store, names, server_pid, cfg, progress)
                log.info(
                    "%d adapters: resolve %s ms, /v1/models %s ms",
                    count,
                    ms(results[count]["http_resolve"].value("wall")),
                    ms(results[count]["http_models"].value("wall")),
                )
    return results, state


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console)]
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per request
    cfg = parse_args()
    if cfg.url is not None:
        results, state = run(cfg, cfg.url, cfg.store, cfg.server_pid)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="registry-scale-"))
        try:
            store_dir = tmp / "store"
            with running_server(store_dir, tmp / "server.log") as (url, pid):
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
        console.print(f"wrote {os.path.relpath(cfg.png)} and appended to BENCHMARKS.md")


if __name__ == "__main__":
    main()
