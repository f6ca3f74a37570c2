"""Backpressure: a bounded number of sequences generating at once, and a share per key.

A request takes its slots (prompts x ``n``) before any work is done for it and gives them
back when its answer ends, however it ends. Past the bound it gets 429 with Retry-After
at once: a queue in front of the engine would only grow the latency of everyone in it,
and a client (or a load balancer) retrying elsewhere does better. Single event loop:
no lock needed.
"""

from __future__ import annotations

from collections import Counter

from .errors import TooManyRequests

#: Seconds a refused client should wait: requests end every few hundred ms under load.
RETRY_AFTER_S = 1


class Slots:
    """What one request holds; ``release`` is idempotent."""

    def __init__(self, owner: InFlight, key: str | None, count: int) -> None:
        self._owner, self._key, self._count = owner, key, count

    def release(self) -> None:
        if self._count:
            self._owner._give_back(self._key, self._count)
            self._count = 0


class InFlight:
    def __init__(self, limit: int, per_key: int | None = None) -> None:
        self.limit = limit
        self.per_key = per_key
        self.total = 0
        self._by_key: Counter[str] = Counter()

    def take(self, key: str | None, count: int) -> Slots:
        """``count`` slots for ``key`` (None: the anonymous caller, no share of its own),
        or TooManyRequests."""
        if self.total + count > self.limit:
            raise TooManyRequests(
                f"the server is busy ({self.total} of {self.limit} sequences generating); "
                "retry shortly", retry_after_s=RETRY_AFTER_S)
        if key is not None and self.per_key is not None \
                and self._by_key[key] + count > self.per_key:
            raise TooManyRequests(
                f"this API key has {self._by_key[key]} of its {self.per_key} sequences "
                "generating; retry when one ends", retry_after_s=RETRY_AFTER_S)
        self.total += count
        if key is not None:
            self._by_key[key] += count
        return Slots(self, key, count)

    def _give_back(self, key: str | None, count: int) -> None:
        self.total -= count
        if key is not None:
            self._by_key[key] -= count
            if not self._by_key[key]:
                del self._by_key[key]
