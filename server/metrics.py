"""hotswap's own Prometheus series, per model (base or adapter), cardinality-capped.

The engine's ``vllm:*`` series live in the same default registry and come out
on the same ``/metrics``.
"""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge

#: Distinct ``model`` label values before new adapters are folded into "other",
#: so that thousands of adapters can not blow up a Prometheus server.
MAX_MODEL_LABELS = 200

REQUESTS = Counter(
    "hotswap_engine_requests",
    "Engine requests by model and outcome (finished, aborted: client went away, error).",
    ["model", "outcome"],
)
IN_FLIGHT = Gauge(
    "hotswap_engine_requests_in_flight", "Engine requests running now, by model.", ["model"]
)

_seen: set[str] = set()
_lock = threading.Lock()


def model_label(name: str) -> str:
    with _lock:
        if name in _seen:
            return name
        if len(_seen) < MAX_MODEL_LABELS:
            _seen.add(name)
            return name
    return "other"
