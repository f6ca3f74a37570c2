"""What a run measured: throughput, TTFT and TPOT percentiles, errors."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

from .client import Result

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Summary:
    requests: int
    errors: int
    wall_s: float
    requests_per_s: float
    output_tokens_per_s: float
    #: Seconds, by percentile ("p50", "p90", "p99").
    ttft: dict[str, float]
    tpot: dict[str, float]
    #: The first few error messages (all of them are counted in ``errors``).
    error_samples: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {f"p{p}": float("nan") for p in PERCENTILES}
    if len(values) == 1:
        return {f"p{p}": values[0] for p in PERCENTILES}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {f"p{p}": cuts[p - 1] for p in PERCENTILES}


def summarize(results: list[Result], wall_s: float) -> Summary:
    ok = [r for r in results if r.error is None]
    errors = [r.error for r in results if r.error is not None]
    return Summary(
        requests=len(results), errors=len(errors), wall_s=wall_s,
        requests_per_s=len(ok) / wall_s if wall_s else 0.0,
        output_tokens_per_s=sum(r.output_tokens for r in ok) / wall_s if wall_s else 0.0,
        ttft=percentiles([t for r in ok if (t := r.ttft) is not None]),
        tpot=percentiles([t for r in ok if (t := r.tpot) is not None]),
        error_samples=errors[:5],
    )
