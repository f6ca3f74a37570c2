"""The server side: tiny adapters uploaded through the admin API, the HTTP calls that are
measured, and the CPU time the server process spends on them."""

from __future__ import annotations

import contextlib
import os
import random
import time
from dataclasses import dataclass, field

import httpx
from rich.progress import Progress

import common

from .config import NAME_PREFIX, PAGE_LIMIT, Config, Op


@dataclass
class Registered:
    names: set[str]  # every name in the store
    total: int
    ours: list[str] = field(default_factory=list)  # names this run uploaded, in order
    next_index: int = 0
    upload_s: list[float] = field(default_factory=list)


def adapter_name(index: int) -> str:
    return f"{NAME_PREFIX}-{index:04d}"


def adapter_archive(index: int, rank: int, seed: int) -> bytes:
    """A tar of a distinct PEFT LoRA dir: rank ``rank`` on q_proj of every layer, bf16."""
    files = common.lora_files(
        common.BUNDLED_MODEL,
        rank=rank,
        target_modules=["q_proj"],
        seed=seed * 1_000_003 + index,
        std=0.01,
        dtype="bfloat16",
        # Layer by layer: the weights the earlier runs recorded in BENCHMARKS.md uploaded.
        peft_order=False,
    )
    return common.tar_bytes(files)


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


def http_ops(client: httpx.Client, names: list[str], rng: random.Random) -> dict[str, Op]:
    """The measured HTTP calls, each returning its (checked) response."""

    def get(path: str) -> httpx.Response:
        resp = client.get(path)
        if resp.status_code != 200:
            raise SystemExit(f"GET {path}: {resp.status_code} {resp.text[:300]}")
        return resp

    return {
        "http_resolve": lambda: get(f"/v1/adapters/{rng.choice(names)}"),
        "http_models": lambda: get("/v1/models"),
        # A page is a constant amount of work, so it, unlike the whole list, can stay flat.
        "http_models_page": lambda: get(f"/v1/models?limit={PAGE_LIMIT}"),
        "http_models_after": lambda: get(
            f"/v1/models?limit={PAGE_LIMIT}&after={rng.choice(names)}"
        ),
        "http_adapters": lambda: get("/v1/adapters"),
        "http_health": lambda: get("/health"),
    }


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
