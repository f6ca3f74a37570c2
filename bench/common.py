"""What the bench scripts share: paths, console and logging, a ``hotswap serve`` subprocess,
tiny LoRA adapters for the bundled model, number formatting and the result files.

The scripts run as ``python bench/<script>.py``: bench/ is then first on ``sys.path`` and
this imports as the top-level module ``common`` (bench/ruff.toml tells ruff as much).
Bench code must not import the tests' helpers (tests/support), so what it needs of them
lives here. Nothing here imports torch or vLLM at module level: lora_throughput sets
environment variables they read at import time after importing this.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import platform
import re
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
# The bundled model's hub id: what `hotswap serve` serves when not told otherwise.
BASE_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
# A cold start on a shared 2-core box prepares the model and profiles the engine.
START_TIMEOUT_S = 420

log = logging.getLogger(__name__)
# Wide enough for the tables when the output is a file or a pipe (rich assumes 80 then).
console = Console(width=None if sys.stdout.isatty() else 132)


# --- console and logging -----------------------------------------------------------------


def setup_logging() -> None:
    """INFO and up through rich, on the console the tables go to."""
    logging.basicConfig(
        level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console)]
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per request


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


# --- a hotswap server --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def running_server(
    args: Sequence[str], log_path: Path, timeout_s: float = START_TIMEOUT_S
) -> Iterator[tuple[str, int]]:
    """``hotswap serve ARGS`` of this venv on a free port, output to ``log_path``; yields
    (url, pid) once ``GET /ready`` answers 200, and stops the server on the way out."""
    port = free_port()
    hotswap = Path(sys.executable).parent / "hotswap"
    cmd = [str(hotswap), "serve", *args, "--port", str(port)]
    with running_process(cmd, port, "/ready", log_path, timeout_s=timeout_s) as pid:
        yield f"http://127.0.0.1:{port}", pid


class ServerExited(SystemExit):
    """A server process ended before it was ready; ``reason`` is its first exception line."""

    def __init__(self, returncode: int, log_path: Path) -> None:
        # The first exception line is the root cause; later ones re-raise it ("Engine
        # core initialization failed. See root cause above.").
        errors = [m[0] for line in log_path.read_text(errors="replace").splitlines()
                  if (m := re.search(r"\b[A-Z]\w*(Error|Exception): .*", line))]
        self.reason = errors[0].strip() if errors else f"exit code {returncode}"
        super().__init__(f"server exited ({returncode}):\n{tail(log_path)}")


@contextlib.contextmanager
def running_process(
    cmd: Sequence[str], port: int, ready_path: str, log_path: Path, *,
    env: dict[str, str] | None = None, timeout_s: float = START_TIMEOUT_S
) -> Iterator[int]:
    """Any HTTP server process (hotswap, vLLM's own): yields its pid once
    ``GET ready_path`` on ``port`` answers 200, and stops it on the way out."""
    log.info("starting %s", " ".join(str(c) for c in cmd[1:]))
    with log_path.open("w") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        with console.status(f"waiting for the server (GET {ready_path})"):
            while True:
                if proc.poll() is not None:
                    raise ServerExited(proc.returncode, log_path)
                if time.monotonic() - started > timeout_s:
                    raise SystemExit(f"server not ready in {timeout_s}s:\n{tail(log_path)}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}{ready_path}", timeout=2).status_code == 200:
                        break
                time.sleep(1)
        log.info("server ready in %.0f s (pid %d)", time.monotonic() - started, proc.pid)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- tiny LoRA adapters ------------------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    """What the matrix shapes of a LoRA on a Llama-style decoder depend on."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int

    @classmethod
    def from_config(cls, model_dir: Path) -> ModelShape:
        """The shape a Hugging Face model dir's config.json gives."""
        c = json.loads((model_dir / "config.json").read_text())
        heads = c["num_attention_heads"]
        return cls(
            layers=c["num_hidden_layers"],
            hidden=c["hidden_size"],
            intermediate=c["intermediate_size"],
            heads=heads,
            kv_heads=c.get("num_key_value_heads") or heads,
            head_dim=c.get("head_dim") or c["hidden_size"] // heads,
        )

    def projection(self, name: str) -> tuple[str, int, int]:
        """(parent module within a layer, in features, out features) of a projection."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {
            "q_proj": ("self_attn", self.hidden, q),
            "k_proj": ("self_attn", self.hidden, kv),
            "v_proj": ("self_attn", self.hidden, kv),
            "o_proj": ("self_attn", q, self.hidden),
            "gate_proj": ("mlp", self.hidden, self.intermediate),
            "up_proj": ("mlp", self.hidden, self.intermediate),
            "down_proj": ("mlp", self.intermediate, self.hidden),
        }[name]


#: Every projection of a Llama-style layer (LoRA "all-linear" without lm_head).
ALL_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# SmolLM2-135M, the bundled model: 30 layers, hidden size 576, 9 query and 3 KV heads.
BUNDLED_MODEL = ModelShape(
    layers=30, hidden=576, intermediate=1536, heads=9, kv_heads=3, head_dim=64
)


def lora_files(
    shape: ModelShape,
    *,
    rank: int,
    target_modules: Sequence[str],
    seed: int,
    std: float,
    dtype: str,
    base_model: str = BASE_MODEL_ID,
    peft_order: bool = True,
) -> dict[str, bytes]:
    """A PEFT LoRA adapter's files by name: adapter_config.json (alpha = rank) and
    adapter_model.safetensors, A and B drawn from N(0, std) for ``target_modules`` of
    every layer, then cast to ``dtype`` (a torch dtype's name).

    One generator seeded with ``seed`` draws each module's A then B, modules in the
    sorted order of their names (``peft_order``: PEFT's own, so the weights equal a PEFT
    model's randomised the same way) or else layer by layer."""
    import torch
    from safetensors.torch import save

    modules = [
        (f"base_model.model.model.layers.{layer}.{parent}.{name}", fan_in, fan_out)
        for layer in range(shape.layers)
        for name in target_modules
        for parent, fan_in, fan_out in [shape.projection(name)]
    ]
    if peft_order:
        modules.sort()
    gen = torch.Generator().manual_seed(seed)
    to = getattr(torch, dtype)
    tensors = {}
    for key, fan_in, fan_out in modules:
        tensors[f"{key}.lora_A.weight"] = (torch.randn(rank, fan_in, generator=gen) * std).to(to)
        tensors[f"{key}.lora_B.weight"] = (torch.randn(fan_out, rank, generator=gen) * std).to(to)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": rank,
        "target_modules": list(target_modules),
        "lora_dropout": 0.0,
        "bias": "none",
        "base_model_name_or_path": base_model,
    }
    return {
        "adapter_config.json": json.dumps(config).encode(),
        "adapter_model.safetensors": save(tensors),
    }


def write_dir(out_dir: Path, files: dict[str, bytes]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out_dir / name).write_bytes(data)
    return out_dir


def tar_bytes(files: dict[str, bytes]) -> bytes:
    """An uncompressed tar of ``files`` with mtime 0, so equal files give equal bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --- numbers -----------------------------------------------------------------------------


def ms(seconds: float) -> str:
    """Milliseconds, with three decimals below 10 ms (point operations) and one above."""
    return f"{seconds * 1e3:.3f}" if seconds < 0.01 else f"{seconds * 1e3:.1f}"


def ratio(r: float) -> str:
    return f"{r:.2f}x"


# --- result files ------------------------------------------------------------------------


def stamped_png(stem: str) -> Path:
    """bench/results/<stem>-<date>-<time>.png: one plot per run, earlier ones kept."""
    return RESULTS / f"{stem}-{time.strftime('%Y%m%d-%H%M')}.png"


def repo_relative(path: Path) -> str:
    """``path`` as a Markdown link from BENCHMARKS.md (at the repo root) needs it."""
    return Path(os.path.relpath(path, REPO)).as_posix()


def _cpuinfo(field: str) -> str | None:
    """The first ``field: value`` of /proc/cpuinfo (None off Linux)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    return None


def cpu_flags() -> set[str]:
    return set((_cpuinfo("flags") or "").split())


def fast_dtype() -> str:
    """bfloat16 where the CPU computes it natively (AVX-512 BF16 or AMX), else float32:
    without them torch emulates bf16 matmuls, about 4x slower than float32 here (an AMD
    EPYC without AVX-512: 26 vs 114 output tok/s at 16 concurrent streams)."""
    return "bfloat16" if cpu_flags() & {"avx512_bf16", "amx_bf16"} else "float32"


def machine() -> str:
    flags = cpu_flags()
    simd = ("AMX" if "amx_bf16" in flags else "AVX-512 BF16" if "avx512_bf16" in flags
            else "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2")
    model = _cpuinfo("model name") or platform.processor() or "unknown CPU"
    return f"{os.cpu_count()} cores ({platform.machine()}, {model}, {simd}), shared with other work"


def load_average() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display on a server)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> None:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


HISTORY_MD = RESULTS / "history.md"


def record_section(text: str) -> None:
    """Put a run's section into BENCHMARKS.md in place of its comparison's last one, which
    moves to bench/results/history.md (bench/record_core)."""
    from record_core import record

    record(BENCHMARKS_MD, HISTORY_MD, text,
           header="# Benchmarks\n\nOne section per comparison, the newest run of each, "
                  "written by the scripts in `bench/`. Earlier runs: "
                  "[bench/results/history.md](bench/results/history.md).\n",
           history_header="# Earlier benchmark runs\n\nSections of BENCHMARKS.md that a "
                          "newer run of the same comparison replaced, the most recently "
                          "replaced first.\n")
