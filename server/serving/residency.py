"""Where each adapter version's weights are, as the engine said at one moment.

Residency (gpu / cpu / disk) is the engine's word, asked when listing: vLLM moves
adapters in and out of its slots and host cache by LRU on its own, so what this process
asked it to load says little.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..engine.interface import Residency


@dataclass(frozen=True)
class Residencies:
    """One engine answer, looked up by stored version."""

    #: engine id -> "gpu" | "cpu" (absent = "disk"); None if the engine could not tell.
    by_engine_id: Mapping[int, Residency] | None
    #: digest -> engine id, for the versions this process has given an id.
    engine_ids: Mapping[str, int]

    def of(self, digest: str) -> Residency | None:
        """The residency of a stored version; None when unknown."""
        if self.by_engine_id is None:
            return None
        engine_id = self.engine_ids.get(digest)
        if engine_id is None:
            return "disk"  # never given an id, so never loaded by this process
        return self.by_engine_id.get(engine_id, "disk")
