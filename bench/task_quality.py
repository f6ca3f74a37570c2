"""Task quality of every PEFT family through the running server, against prompt
engineering, on both demo tasks (examples/tasks/: ``extract_person``, JSON extraction;
``route_ticket``, classification): base zero-shot, base few-shot, and every adapter of
the task in examples/adapters/ (LoRA, prompt tuning, P-tuning, prefix tuning), scored
by exact match on the same held-out examples, with adapter bytes, stored numbers,
output tokens per second and the storage arithmetic against one full fine-tuned copy
per adapter.

    python bench/task_quality.py [-n 40] [--concurrency 8] [--task route_ticket]

One server (bundled model, bf16, all adapters registered at start, so both tasks are
served side by side); a table on the console, a bar chart in bench/results/, a section
in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table
from safetensors import safe_open

from common import (
    REPO,
    console,
    load_average,
    machine,
    progress_bar,
    pyplot,
    record_section,
    repo_relative,
    running_server,
    save_figure,
    setup_logging,
    stamped_png,
)

sys.path.insert(0, str(REPO / "examples"))
from tasks import NAMES, Task, load

ADAPTERS = REPO / "examples" / "adapters"
#: Adapter name suffix after the task's -> PEFT family (as examples/train.py names them).
FAMILIES = {"": "LoRA", "-prompt": "prompt tuning", "-ptuning": "P-tuning",
            "-prefix": "prefix tuning"}
#: Few-shot: worked examples from the training split, as earlier chat turns.
SHOTS = 3


@dataclass
class Row:
    task: str
    label: str
    correct: int
    total: int
    tokens_per_s: float
    adapter_bytes: int | None = None
    parameters: int | None = None


def _parameters(adapter_dir: Path) -> int:
    """Numbers stored in the adapter (for P-tuning: the soft prompt it serves, not the
    prompt encoder it was trained with)."""
    with safe_open(str(adapter_dir / "adapter_model.safetensors"), framework="pt") as f:
        total = 0
        for key in f.keys():  # noqa: SIM118  (safe_open is no mapping)
            count = 1
            for dim in f.get_slice(key).get_shape():
                count *= dim
            total += count
        return total


def _shots(task: Task) -> list[dict[str, str]]:
    turns: list[dict[str, str]] = []
    for ex in task.make_examples(SHOTS, "train", 99):
        turns += [*task.build_messages(ex), {"role": "assistant", "content": ex.answer}]
    return turns


def task_adapters(task: Task) -> dict[str, tuple[str, Path]]:
    """Served name -> (family, directory) of the task's adapters that exist."""
    return {task.adapter + suffix: (family, ADAPTERS / (task.adapter + suffix))
            for suffix, family in FAMILIES.items()
            if (ADAPTERS / (task.adapter + suffix)).is_dir()}


async def _score(client: httpx.AsyncClient, task: Task, model: str, examples: list[Any],
                 prefix: list[dict[str, str]], concurrency: int) -> tuple[int, float]:
    gate = asyncio.Semaphore(concurrency)
    tokens = 0

    async def one(ex: Any) -> bool:
        nonlocal tokens
        async with gate:
            resp = await client.post("/v1/chat/completions", json={
                "model": model, "messages": [*prefix, *task.build_messages(ex)],
                "max_tokens": task.max_new_tokens, "temperature": 0})
            resp.raise_for_status()
            body = resp.json()
            tokens += body["usage"]["completion_tokens"]
            return task.is_correct(ex, body["choices"][0]["message"]["content"])

    start = time.perf_counter()
    results = await asyncio.gather(*(one(ex) for ex in examples))
    return sum(results), tokens / (time.perf_counter() - start)


async def _run(url: str, base: str, n: int, concurrency: int, tasks: list[Task]
               ) -> list[Row]:
    rows = []
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        with progress_bar() as bar:
            total = sum(2 + len(task_adapters(t)) for t in tasks)
            progress = bar.add_task("scoring", total=total)
            for task in tasks:
                examples = list(task.make_examples(n, "heldout", 0))
                for label, prefix in [("base, zero-shot", []),
                                      (f"base, {SHOTS}-shot", _shots(task))]:
                    correct, rate = await _score(client, task, base, examples, prefix,
                                                 concurrency)
                    rows.append(Row(task.name, label, correct, n, rate))
                    bar.advance(progress)
                for name, (family, path) in task_adapters(task).items():
                    correct, rate = await _score(client, task, name, examples, [],
                                                 concurrency)
                    size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
                    rows.append(Row(task.name, f"{family} ({name})", correct, n, rate, size,
                                    _parameters(path)))
                    bar.advance(progress)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=40, help="held-out sentences")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--task", choices=NAMES, action="append",
                        help="score only this task (repeatable; default: all)")
    args = parser.parse_args()
    setup_logging()
    tasks = [load(name) for name in (args.task or NAMES)]
    adapters = {name: path for t in tasks for name, (_, path) in task_adapters(t).items()}
    flags = [arg for name, path in adapters.items() for arg in ("--adapter", f"{name}={path}")]
    with tempfile.TemporaryDirectory() as tmp, running_server(
            ["--store", f"{tmp}/store", *flags], Path(tmp) / "server.log") as (url, _):
        models = httpx.get(f"{url}/v1/models").json()["data"]
        base = next(m for m in models if m.get("kind") == "base")
        rows = asyncio.run(_run(url, base["id"], args.n, args.concurrency, tasks))
    base_bytes = base.get("size_bytes") or 0
    table = Table("task", "model", "exact match", "output tok/s", "adapter bytes",
                  "parameters")
    for r in rows:
        table.add_row(r.task, r.label, f"{r.correct}/{r.total}", f"{r.tokens_per_s:.0f}",
                      f"{r.adapter_bytes:,}" if r.adapter_bytes else "-",
                      f"{r.parameters:,}" if r.parameters else "-")
    console.print(table)
    stored = sum(r.adapter_bytes or 0 for r in rows)
    console.print(f"{len(adapters)} adapters: {stored / 1e6:.2f} MB stored; as full "
                  f"fine-tuned copies: {len(adapters) * base_bytes / 1e6:.0f} MB")

    plt = pyplot()
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        mine = [r for r in rows if r.task == task.name]
        ax.barh([r.label for r in mine][::-1], [r.correct / r.total * 100 for r in mine][::-1],
                color=["#3b7dd8"] * (len(mine) - 2) + ["#999999"] * 2)
        ax.set_xlabel(f"exact match on {args.n} held-out examples (%)")
        ax.set_xlim(0, 100)
        ax.set_title(f"{task.name}")
    fig.suptitle("Prompt engineering vs one adapter per PEFT family, one base model")
    fig.tight_layout()
    png = stamped_png("task_quality")
    save_figure(fig, png)
    record_section(
        f"\n## Task quality per PEFT family ({time.strftime('%Y-%m-%d')})\n\n"
        f"`python bench/task_quality.py -n {args.n}`; {machine()}, load {load_average()}; "
        "bundled model in bf16 through one `hotswap serve` with every adapter registered, "
        "greedy chat completions of the held-out examples of `examples/tasks/` "
        "(templates, and for extract_person names, that training never saw). Few-shot: "
        f"{SHOTS} worked examples as earlier chat turns.\n\n"
        "| task | model | exact match | output tok/s | adapter bytes | stored numbers |\n"
        "|---|---|---:|---:|---:|---:|\n"
        + "".join(f"| {r.task} | {r.label} | {r.correct}/{r.total} | {r.tokens_per_s:.0f} | "
                  f"{r.adapter_bytes or '-'} | {r.parameters or '-'} |\n" for r in rows)
        + f"\nStorage: {len(adapters)} adapters take {stored / 1e6:.2f} MB; one full "
        f"fine-tuned copy of the base model for each would take "
        f"{len(adapters) * base_bytes / 1e6:.0f} MB ({base_bytes / 1e6:.0f} MB each).\n\n"
        f"![task quality]({repo_relative(png)})\n")


if __name__ == "__main__":
    main()
