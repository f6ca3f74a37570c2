"""CPU time a server spends, split into its front process (HTTP, tokenizing, streaming:
the server's own code) and its children (vLLM's engine core and worker). A process tree
is what ``vllm serve`` and ``hotswap serve`` are on CPU; the split says on which side of
the engine's queue a server spends more. The engine processes busy-poll, so their CPU
follows their wall time: there, more CPU per token means a slower engine."""

from __future__ import annotations

from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class TreeCpu:
    front_s: float  # the process itself, all its threads, user + system
    children_s: float  # every live descendant, user + system

    def __sub__(self, other: TreeCpu) -> TreeCpu:
        return TreeCpu(self.front_s - other.front_s, self.children_s - other.children_s)


def tree_cpu(pid: int) -> TreeCpu:
    """CPU seconds so far. Descendants are read live: one that exited in between is not
    counted, so read before and after work in which the tree stays the same (a warm
    server's)."""
    proc = psutil.Process(pid)
    front = proc.cpu_times()
    children = 0.0
    for child in proc.children(recursive=True):
        try:
            t = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        children += t.user + t.system
    return TreeCpu(front.user + front.system, children)
