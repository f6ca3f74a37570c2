"""Task quality of every PEFT family through the running server, against prompt
engineering: base zero-shot, base few-shot, and the LoRA, prompt-tuning, P-tuning and
prefix-tuning ``extract-person`` adapters (examples/adapters/), scored by exact match
on the same held-out sentences, with adapter bytes, trainable parameters, output
tokens per second and the storage arithmetic against one full fine-tuned copy per task.

    python bench/task_quality.py [-n 40] [--concurrency 8]

One server (bundled model, bf16, the adapters registered at start); a table on the
console, a bar chart in bench/results/, a section in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.table import Table
from safetensors import safe_open

from common import (
    REPO,
    append_benchmarks,
    console,
    load_average,
    machine,
    progress_bar,
    pyplot,
    repo_relative,
    running_server,
    save_figure,
    setup_logging,
    stamped_png,
)

sys.path.insert(0, str(REPO / "examples" / "extract_person"))
from task import Example, build_messages, is_correct, make_examples

ADAPTERS = REPO / "examples" / "adapters"
FAMILIES = {"extract-person": "LoRA", "extract-person-prompt": "prompt tuning",
            "extract-person-ptuning": "P-tuning", "extract-person-prefix": "prefix tuning"}
MAX_TOKENS = 48  # as examples/extract_person: the answer is ~20 tokens
#: Few-shot: worked examples from the training split, as earlier chat turns.
SHOTS = 3


@dataclass
class Row:
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


def _shots() -> list[dict[str, str]]:
    turns: list[dict[str, str]] = []
    for ex in make_examples(SHOTS, "train", seed=99):
        turns += [*build_messages(ex), {"role": "assistant", "content": ex.answer}]
    return turns


async def _score(client: httpx.AsyncClient, model: str, examples: list[Example],
                 prefix: list[dict[str, str]], concurrency: int) -> tuple[int, float]:
    gate = asyncio.Semaphore(concurrency)
    tokens = 0

    async def one(ex: Example) -> bool:
        nonlocal tokens
        async with gate:
            resp = await client.post("/v1/chat/completions", json={
                "model": model, "messages": [*prefix, *build_messages(ex)],
                "max_tokens": MAX_TOKENS, "temperature": 0})
            resp.raise_for_status()
            body = resp.json()
            tokens += body["usage"]["completion_tokens"]
            return is_correct(ex, body["choices"][0]["message"]["content"])

    start = time.perf_counter()
    results = await asyncio.gather(*(one(ex) for ex in examples))
    return sum(results), tokens / (time.perf_counter() - start)


async def _run(url: str, base: str, n: int, concurrency: int, adapters: dict[str, Path]
               ) -> list[Row]:
    examples = make_examples(n, "heldout", seed=0)
    rows = []
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        with progress_bar() as bar:
            task = bar.add_task("scoring", total=2 + len(adapters))
            for label, prefix in [("base, zero-shot", []), (f"base, {SHOTS}-shot", _shots())]:
                correct, rate = await _score(client, base, examples, prefix, concurrency)
                rows.append(Row(label, correct, n, rate))
                bar.advance(task)
            for name, path in adapters.items():
                correct, rate = await _score(client, name, examples, [], concurrency)
                size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
                rows.append(Row(f"{FAMILIES[name]} ({name})", correct, n, rate, size,
                                _parameters(path)))
                bar.advance(task)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=40, help="held-out sentences")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    setup_logging()
    adapters = {name: ADAPTERS / name for name in FAMILIES if (ADAPTERS / name).is_dir()}
    flags = [arg for name, path in adapters.items() for arg in ("--adapter", f"{name}={path}")]
    with tempfile.TemporaryDirectory() as tmp, running_server(
            ["--store", f"{tmp}/store", *flags], Path(tmp) / "server.log") as (url, _):
        models = httpx.get(f"{url}/v1/models").json()["data"]
        base = next(m for m in models if m.get("kind") == "base")
        rows = asyncio.run(_run(url, base["id"], args.n, args.concurrency, adapters))
    base_bytes = base.get("size_bytes") or 0
    table = Table("model", "exact match", "output tok/s", "adapter bytes", "parameters")
    for r in rows:
        table.add_row(r.label, f"{r.correct}/{r.total}", f"{r.tokens_per_s:.0f}",
                      f"{r.adapter_bytes:,}" if r.adapter_bytes else "-",
                      f"{r.parameters:,}" if r.parameters else "-")
    console.print(table)
    stored = sum(r.adapter_bytes or 0 for r in rows)
    console.print(f"{len(adapters)} adapters: {stored / 1e6:.2f} MB stored; as full "
                  f"fine-tuned copies: {len(adapters) * base_bytes / 1e6:.0f} MB")

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.barh([r.label for r in rows][::-1], [r.correct / r.total * 100 for r in rows][::-1],
            color=["#999999"] * 2 + ["#3b7dd8"] * (len(rows) - 2))
    ax.set_xlabel(f"exact match on {args.n} held-out sentences (%)")
    ax.set_xlim(0, 100)
    ax.set_title("extract-person: prompt engineering vs one adapter per PEFT family")
    png = stamped_png("task_quality")
    save_figure(fig, png)
    append_benchmarks(
        f"\n## Task quality per PEFT family ({time.strftime('%Y-%m-%d')})\n\n"
        f"`python bench/task_quality.py -n {args.n}`; {machine()}, load {load_average()}; "
        "bundled model in bf16 through `hotswap serve`, greedy chat completions of the "
        "held-out sentences of `examples/extract_person` (names and templates training "
        f"never saw). Few-shot: {SHOTS} worked examples as earlier chat turns.\n\n"
        "| model | exact match | output tok/s | adapter bytes | stored numbers |\n"
        "|---|---:|---:|---:|---:|\n"
        + "".join(f"| {r.label} | {r.correct}/{r.total} | {r.tokens_per_s:.0f} | "
                  f"{r.adapter_bytes or '-'} | {r.parameters or '-'} |\n" for r in rows)
        + f"\nStorage: {len(adapters)} task adapters take {stored / 1e6:.2f} MB; one full "
        f"fine-tuned copy of the base model per task would take "
        f"{len(adapters) * base_bytes / 1e6:.0f} MB ({base_bytes / 1e6:.0f} MB each).\n\n"
        f"![task quality]({repo_relative(png)})\n")


if __name__ == "__main__":
    main()
