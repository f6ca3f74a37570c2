"""What a soak records: the admin ops, the live counts for progress displays, and the
result filled in phase by phase with its JSON summary."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from .config import SoakConfig
from .oracle import BASE, Outcome, Record
from .probes import MIB, RssSample, RssVerdict


@dataclass(frozen=True)
class AdminOp:
    kind: str  # upload, promote, rollback, delete_tag, delete, recreate
    name: str
    start: float
    end: float
    status: int | None
    digest: str | None = None
    detail: str = ""


@dataclass
class Live:
    """Counts while the soak runs, before any answer is judged (for progress displays)."""

    phase: str = "set-up"
    elapsed_s: float = 0.0
    duration_s: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    ops: int = 0
    rss_mib: float = 0.0


@dataclass
class SoakResult:
    """Filled in phase by phase; what a phase that did not run (the server died) would
    have measured stays empty."""

    config: SoakConfig
    started: float = 0.0  # monotonic time traffic began; times in the report are relative
    traffic_end: float = 0.0
    records: list[Record] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    ops: list[AdminOp] = field(default_factory=list)
    rss: list[RssSample] = field(default_factory=list)
    rss_verdict: RssVerdict | None = None
    leak_after_traffic: dict[str, float] = field(default_factory=dict)
    leak_after_cleanup: dict[str, float] = field(default_factory=dict)
    references: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    wrong: list[dict[str, Any]] = field(default_factory=list)
    #: OK answers whose request raced an admin op that changed what it may get.
    raced_ok: int = 0
    #: Pairs of versions with equal references on every prompt (the soak could not tell
    #: them apart; a sanity number, expected 0).
    indistinct_pairs: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> dict[str, Any]:
        """The JSON summary: configuration, counts, latencies, RSS, gauges, verdicts."""
        counts = Counter(o.value for o in self.outcomes)
        served = [r.latency for r, o in zip(self.records, self.outcomes, strict=True)
                  if o is Outcome.OK]
        t0 = self.started
        return {
            "config": {k: v for k, v in asdict(self.config).items() if k != "prompts"},
            "prompts": [asdict(p) for p in self.config.prompts],
            "traffic_s": round(self.traffic_end - t0, 1),
            "requests": len(self.records),
            "outcomes": {o.value: counts.get(o.value, 0) for o in Outcome},
            "raced_ok": self.raced_ok,
            "by_target": dict(Counter(
                "base" if r.ref == BASE else r.ref.split(":")[1] for r in self.records)),
            "latency_s": percentiles(served),
            "admin_ops": dict(Counter(op.kind for op in self.ops)),
            "admin_latency_s": {k: percentiles([op.end - op.start for op in self.ops
                                                if op.kind == k])
                                for k in sorted({op.kind for op in self.ops})},
            "versions": len({d for d, _ in self.references} - {BASE}),
            "indistinct_version_pairs": self.indistinct_pairs,
            "rss": None if self.rss_verdict is None else asdict(self.rss_verdict),
            "rss_series": [{"t": round(s.t - t0, 2), "server_mib": round(s.server / MIB, 1),
                            "children_mib": round(s.children / MIB, 1)} for s in self.rss],
            "gauges_after_traffic": self.leak_after_traffic,
            "gauges_after_cleanup": self.leak_after_cleanup,
            "wrong_or_lost": self.wrong,
            "failures": self.failures,
            "ok": self.ok,
        }


def percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    qs = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else [
        values[0]] * 99
    return {"p50": round(qs[49], 3), "p90": round(qs[89], 3), "p99": round(qs[98], 3),
            "max": round(max(values), 3), "n": len(values)}
