"""The plot: latency at each count, and the ratios to the first count (wall clock, CPU)."""

from __future__ import annotations

from pathlib import Path

import common

from .config import GOAL, LIST_OPS, METRICS, OPS
from .measure import Results, has, per_entry, series, values


def plot(results: Results, path: Path, title: str) -> None:
    plt = common.pyplot()
    counts = sorted(results)
    ref = counts[0]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    ax_lat = axes[0]
    colors = {op: f"C{i}" for i, op in enumerate(OPS)}
    for op, label in OPS.items():
        if op not in results[ref]:
            continue
        s = series(results, op)
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
            s = series(results, op)
            vs = values(s, metric)
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
                ax.plot(counts, [v / vs[0] for v in vs], color=colors[op], alpha=0.3)
            else:
                ax.plot(counts, [v / vs[0] for v in vs], marker="o", color=colors[op], label=label)
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
    common.save_figure(fig, path)
