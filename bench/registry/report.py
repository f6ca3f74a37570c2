"""The results in words: rich tables for the terminal, the verdicts against the goal, and
the section recorded in BENCHMARKS.md."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import statistics
from pathlib import Path

from rich.table import Table

import common

from .config import GOAL, LIST_OPS, METRICS, OPS, PAGE_LIMIT, PAGE_OPS, PNG, STORE_OPS, Config
from .measure import Results, Sample, has, marginal_costs, per_entry, ratios, series, values
from .server import Registered


def verdict(ratio: float) -> str:
    return "[green]yes[/]" if ratio <= GOAL else "[red]no[/]"


def cell(sample: Sample, metric: str) -> str:
    if metric == "wall":
        return f"{common.ms(sample.value('wall'))} ({common.ms(sample.p90)})"
    return common.ms(sample.value("cpu"))


def unit(metric: str, sep: str) -> str:
    return f"median (p90){sep}ms" if metric == "wall" else "median over batches, ms"


def capitalized(text: str) -> str:
    return f"{text[0].upper()}{text[1:]}"


def ratio_table(title: str, counts: list[int], *lead: str) -> Table:
    """Columns: ``lead``, one per count, one per count's ratio to the first, the goal."""
    table = Table(title=title)
    for name in lead:
        table.add_column(name)
    for c in counts:
        table.add_column(f"{c}", justify="right")
    for c in counts[1:]:
        table.add_column(f"{c}/{counts[0]}", justify="right")
    table.add_column(f"<= {GOAL}x", justify="center")
    return table


def ratio_cells(rs: list[float]) -> list[str]:
    """The ratio columns and the goal column of a row."""
    return [*(common.ratio(r) for r in rs), verdict(max(rs)) if rs else ""]


def latency_table(results: Results, metric: str) -> Table:
    counts = sorted(results)
    title = f"{capitalized(METRICS[metric])}, {unit(metric, ' in ')}"
    table = ratio_table(title, counts, "operation")
    for op, label in OPS.items():
        if not has(results, op, metric):
            continue
        s = series(results, op)
        table.add_row(label, *(cell(x, metric) for x in s), *ratio_cells(ratios(values(s, metric))))
    return table


def per_entry_table(results: Results) -> Table:
    counts = sorted(results)
    table = ratio_table(
        "Listings: cost per entry in µs (median / entries) and marginal cost of each "
        "added entry (the step from the previous count)",
        counts,
        "listing",
        "",
    )
    for op in LIST_OPS:
        if op not in results[counts[0]]:
            continue
        s = series(results, op)
        first = True
        for metric in METRICS:
            if not has(results, op, metric):
                continue
            per = per_entry(s, metric)
            table.add_row(
                OPS[op] if first else "",
                f"per entry, {metric}",
                *(f"{p * 1e6:.1f}" for p in per),
                *ratio_cells(ratios(per)),
            )
            first = False
            marginal = marginal_costs(s, metric)
            table.add_row(
                "",
                f"marginal, {metric}",
                "",
                *(f"{m * 1e6:.1f}" for m in marginal),
                "",
                *ratio_cells(ratios(marginal)),
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


def md_row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def md_head(counts: list[int], lead: list[str], per_count: str, last: str, align: str) -> list[str]:
    """A Markdown table's head: ``lead`` columns, one per count (``per_count`` formats
    it), one per ratio to the first count, and ``last`` aligned as ``align`` says."""
    ref = counts[0]
    return [
        md_row(
            *lead,
            " | ".join(per_count.format(c) for c in counts),
            " | ".join(f"{c} / {ref}" for c in counts[1:]),
            last,
        ),
        "|---" * len(lead) + "|---:" * (2 * len(counts) - 1) + f"|{align}|",
    ]


def markdown(results: Results) -> str:
    counts = sorted(results)
    lines = []
    for metric, label in METRICS.items():
        lines += [
            f"{capitalized(label)}, {unit(metric, ', ')}:",
            "",
            *md_head(counts, ["operation"], "{} adapters", f"<= {GOAL}x", ":-:"),
        ]
        for op, name in OPS.items():
            if not has(results, op, metric):
                continue
            s = series(results, op)
            rs = ratios(values(s, metric))
            lines.append(
                md_row(
                    f"`{name}`",
                    " | ".join(cell(x, metric) for x in s),
                    " | ".join(common.ratio(r) for r in rs),
                    "yes" if rs and max(rs) <= GOAL else "no",
                )
            )
        lines.append("")
    steps = " / ".join(f"{a}->{b}" for a, b in itertools.pairwise(counts))
    lines += [
        "Listings per entry (median / entries, µs) and marginal cost of each added entry (µs):",
        "",
        *md_head(counts, ["listing", "clock"], "{}", f"marginal {steps}", "---:"),
    ]
    for op in LIST_OPS:
        for metric in METRICS:
            if not has(results, op, metric):
                continue
            s = series(results, op)
            per = per_entry(s, metric)
            lines.append(
                md_row(
                    f"`{OPS[op]}`",
                    metric,
                    " | ".join(f"{p * 1e6:.1f}" for p in per),
                    " | ".join(common.ratio(r) for r in ratios(per)),
                    " / ".join(f"{m * 1e6:.1f}" for m in marginal_costs(s, metric)),
                )
            )
    return "\n".join(lines)


def meets(r: float) -> str:
    return "meets" if r <= GOAL else "misses"


def verdicts(results: Results) -> list[str]:
    """The goal, checked on each number the issue names, in plain words."""
    counts = sorted(results)
    ref, top = counts[0], counts[-1]
    out = []
    for op in ("http_resolve", "store_resolve", "http_models"):
        worst = {
            metric: max(values(series(results, op), metric)) / results[ref][op].value(metric)
            for metric in METRICS
            if has(results, op, metric)
        }
        if not worst:
            continue
        out.append(
            f"`{OPS[op]}`: "
            + ", ".join(f"{metric} {r:.2f}x ({meets(r)})" for metric, r in worst.items())
        )
    s = series(results, "http_models")
    parts = []
    for metric in METRICS:
        if has(results, "http_models", metric):
            per = per_entry(s, metric)
            r = max(per) / per[0]
            parts.append(
                f"{metric} {r:.2f}x ({meets(r)}; "
                f"{per[0] * 1e6:.0f} µs at {ref}, {per[-1] * 1e6:.0f} µs at {top})"
            )
    out.append(
        f"`{OPS['http_models']}` per listed model: "
        + ", ".join(parts)
        + ". A listing holds every adapter, so its whole latency can not stay flat; "
        "per entry is the reading of the goal it can meet"
    )
    out += page_verdicts(results)
    return out


def page_verdicts(results: Results) -> list[str]:
    """A page is flat if it costs the same at every store size it is full at: below
    PAGE_LIMIT adapters it holds fewer entries, so the reference is the first full one."""
    full = [c for c in sorted(results) if c >= PAGE_LIMIT]
    if len(full) < 2:
        return []
    out = []
    for op in PAGE_OPS:
        worst = {
            metric: max(results[c][op].value(metric) for c in full)
            / results[full[0]][op].value(metric)
            for metric in METRICS
            if has(results, op, metric)
        }
        if worst:
            out.append(
                f"`{OPS[op]}` from {full[0]} to {full[-1]} adapters: "
                + ", ".join(f"{metric} {r:.2f}x ({meets(r)})" for metric, r in worst.items())
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
    machine, load = common.machine(), common.load_average()
    layers = common.BUNDLED_MODEL.layers
    upload = statistics.median(state.upload_s) * 1e3 if state.upload_s else float("nan")
    note = f"\n{cfg.note}\n" if cfg.note else ""
    checks = "\n".join("- " + v for v in verdicts(results))
    common.record_section(f"""
## Adapter registry at scale: resolve and listings vs number of adapters \
({dt.date.today().isoformat()})

`{command_line(cfg)}`
{note}
One `hotswap serve` (bundled model on CPU, `--max-model-len 512`, `--log-level warning`,
a fresh store on the local disk), {machine}, load average {load}. Adapters registered
through `POST /v1/adapters` (tar body; rank-{cfg.rank} LoRA on q_proj of all {layers}
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

![Adapter registry at scale]({common.repo_relative(png)})
""")
