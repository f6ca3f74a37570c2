"""What a soak runs against and how: the server (``Target``), the settings
(``SoakConfig``), the prompts and the injected adapter archives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

#: seed -> an adapter archive (tar of a PEFT LoRA dir); distinct seeds, distinct weights.
#: Injected: the bench builds archives with bench/common.py, the tests with tests/support.
ArchiveFactory = Callable[[int], bytes]


@dataclass(frozen=True)
class Prompt:
    endpoint: Literal["completions", "chat"]
    text: str


PROMPTS = (
    Prompt("completions", "The best thing about Paris is"),
    Prompt("completions", "Once upon a time, in a small village by the sea,"),
    Prompt("chat", "Name three colours."),
    Prompt("chat", "Write one sentence about the moon."),
)


@dataclass(frozen=True)
class Target:
    """The server under soak."""

    url: str
    base_name: str
    pid: int  # the ``hotswap serve`` process; the engine core is its child
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SoakConfig:
    duration_s: float
    adapters: int
    clients: int
    #: Adapter names are ``PREFIX-<i>`` (and ``PREFIX-ref`` for references): unique to
    #: the run, so a shared server's other adapters are not touched.
    prefix: str
    max_tokens: int = 8
    mutation_every_s: float = 1.0
    seed: int = 0
    base_share: float = 0.1
    stream_share: float = 0.05
    #: Deletes are skipped while fewer names than this share exist, so most traffic is
    #: served rather than 404.
    min_alive_share: float = 0.5
    rss_every_s: float = 1.0
    #: Judge RSS (needs a few minutes of traffic to mean anything, see judge_rss).
    check_rss: bool = True
    #: Allowed growth of the median RSS from the middle to the last third. What moves in
    #: a steady state is small: vLLM's host cache holds at most --max-cpu-loras adapters
    #: (each ~2 MB here), hotswap's per-request state is bounded by the clients. 32 MiB is
    #: a few times that; a leak of one adapter copy per upload (~35 uploads a minute at
    #: the default rate, ~2 MB each) exceeds it within a third of a 3-minute soak.
    rss_tolerance_mib: float = 32.0
    request_timeout_s: float = 300.0
    leak_timeout_s: float = 60.0
    prompts: tuple[Prompt, ...] = PROMPTS
