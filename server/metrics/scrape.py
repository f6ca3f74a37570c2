"""The ``/metrics`` body: refresh what is read at scrape time, then expose every series.

At each scrape, once the server is serving:

- residency per adapter and tier is asked of the engine (one cheap call) and the store
  is listed (cached for :data:`LISTING_TTL_S`: a listing reads a file per adapter), to
  set the residency, eviction and storage series (adapters.py);
- vLLM's ``vllm:lora_requests_info`` is rewritten to name adapters as clients send them
  in ``model`` (the engine knows them as ``hotswap-<engine id>``): the Gateway API
  inference extension's endpoint picker compares those names with the request's model;
- ``hotswap_lora_requests_info`` is published for routers: the same labels, where
  ``running_lora_adapters`` also lists adapters warm in the engine while idle (vLLM's
  series forgets them the moment their last request ends, so a router can not prefer
  the replica that has an adapter warm), and every adapter type, not only LoRA.
  ``docs/metrics.md`` says how to point a router at it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from ..deps import Serving
from ..engine.interface import Residency
from ..serving.models import ServedAdapter
from ..serving.table import AdapterState
from . import adapters as series
from .labels import OTHER
from .requests import LABELS

log = logging.getLogger(__name__)

VLLM_LORA_INFO = "vllm:lora_requests_info"
RUNNING, WAITING, MAX_LORA = "running_lora_adapters", "waiting_lora_adapters", "max_lora"
#: A store listing reads a small file per adapter: at most this often, however many
#: scrapers there are.
LISTING_TTL_S = 10.0
#: vLLM's name for an adapter: ``hotswap-<engine id>`` (engine/vllm.py).
ENGINE_NAME_PREFIX = "hotswap-"

LORA_INFO = Gauge(
    "hotswap_lora_requests_info",
    "For adapter-affinity routers, in the format of vllm:lora_requests_info (value: the "
    "time of the scrape): running_lora_adapters = adapters with requests running or warm "
    "in the engine (no load needed), waiting_lora_adapters = adapters with requests "
    "waiting, resident_lora_adapters = every adapter loaded in memory; all adapter "
    "types; names as clients send them in model.",
    [MAX_LORA, RUNNING, WAITING, "resident_lora_adapters"])

CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass
class _Listing:
    adapters: list[ServedAdapter] = field(default_factory=list)
    at: float = float("-inf")


@dataclass
class Scraper:
    """One per app: what the last scrape saw (for evictions) and the cached listing."""

    _listing: _Listing = field(default_factory=_Listing)
    _tiers: dict[str, Residency] = field(default_factory=dict)

    async def render(self, serving: Serving | None) -> bytes:
        names: dict[str, list[str]] = {}
        if serving is not None:
            try:
                names = await self._refresh(serving)
            except Exception as exc:  # a scrape must still answer with what it has
                log.warning("metrics refresh failed: %s", exc)
        return generate_latest(_Translated(names))

    async def _refresh(self, serving: Serving) -> dict[str, list[str]]:
        now = time.monotonic()
        if now - self._listing.at > LISTING_TTL_S:
            self._listing = _Listing(await serving.models.adapters(), now)
        listing = self._listing.adapters
        residencies = await serving.table.residency()

        # engine name -> the model ids clients reach that version by
        names: dict[str, list[str]] = {}
        for a in listing:
            names.setdefault(f"{ENGINE_NAME_PREFIX}{a.spec.engine_id}", []).append(a.model_id)
        for spec in serving.table.specs():
            names.setdefault(f"{ENGINE_NAME_PREFIX}{spec.engine_id}", [spec.name])

        series.RESIDENCY.clear()
        other: dict[tuple[str, Residency], int] = {}
        warm: list[str] = []
        hot: list[str] = []
        for a in listing:
            tier = residencies.of(a.manifest.digest)
            if tier is None:
                continue
            label, kind = LABELS.existing(a.model_id)
            if label == OTHER:
                kind = a.spec.kind
                other[(kind, tier)] = other.get((kind, tier), 0) + 1
            else:
                series.RESIDENCY.labels(label, kind, tier).set(1)
            if tier != "disk":
                warm.append(a.model_id)
            if tier == "gpu" or (tier == "cpu" and a.spec.kind != "lora"):
                hot.append(a.model_id)  # served without a load or a slot change
            self._count_eviction(a, tier, label, kind,
                                 serving.table.state(a.manifest.digest))
        for (kind, tier), count in other.items():
            series.RESIDENCY.labels(OTHER, kind, tier).set(count)

        digests = {a.manifest.digest: a.manifest.size_bytes for a in listing}
        stored = sum(digests.values())
        base = serving.service.base_model_bytes or 0
        series.REGISTERED.set(len(listing))
        series.VERSIONS.set(len(digests))
        series.STORED_BYTES.set(stored)
        series.BASE_BYTES.set(base)
        series.SAVED_BYTES.set(max(len(digests) * base - stored, 0))

        self._publish_routing(names, hot, warm, serving.table.running_names())
        return names

    def _count_eviction(self, a: ServedAdapter, tier: Residency, label: str, kind: str,
                        state: AdapterState | None) -> None:
        before = self._tiers.get(a.model_id)
        self._tiers[a.model_id] = tier
        if before is None or series.TIERS.index(tier) <= series.TIERS.index(before):
            return
        # Down a tier. Out of a device slot is always the engine's choice; out of memory
        # is an eviction only while this process still holds it loaded (not an unload).
        if before == "gpu" or state is AdapterState.RESIDENT:
            series.EVICTIONS.labels(label, kind, before).inc()

    def _publish_routing(self, names: Mapping[str, list[str]], hot: list[str],
                         warm: list[str], in_flight: Iterable[str]) -> None:
        latest = _latest_vllm_lora_info()
        running = set(hot) | set(in_flight)
        waiting: set[str] = set()
        max_lora = ""
        if latest is not None:
            running |= set(_rename(latest.get(RUNNING, ""), names))
            waiting = set(_rename(latest.get(WAITING, ""), names))
            max_lora = latest.get(MAX_LORA, "")
        LORA_INFO.clear()
        LORA_INFO.labels(max_lora, ",".join(sorted(running)), ",".join(sorted(waiting)),
                         ",".join(sorted(warm))).set(time.time())


def _rename(csv: str, names: Mapping[str, list[str]]) -> list[str]:
    out: list[str] = []
    for part in csv.split(","):
        part = part.strip()
        if part:
            out += names.get(part, [part])
    return out


def _latest_vllm_lora_info() -> dict[str, str] | None:
    """The labels of vLLM's newest lora info sample (its value is the time it was set)."""
    best: Sample | None = None
    for family in REGISTRY.collect():
        if family.name == VLLM_LORA_INFO:
            for sample in family.samples:
                if best is None or sample.value > best.value:
                    best = sample
    return None if best is None else dict(best.labels)


class _Translated:
    """The default registry, with vLLM's lora info naming adapters as clients do."""

    def __init__(self, names: Mapping[str, list[str]]) -> None:
        self._names = names

    def collect(self) -> Iterator[Metric]:
        for family in REGISTRY.collect():
            if family.name != VLLM_LORA_INFO or not self._names:
                yield family
                continue
            renamed = Metric(family.name, family.documentation, family.type)
            merged: dict[tuple[tuple[str, str], ...], Sample] = {}
            for s in family.samples:
                labels = dict(s.labels)
                for key in (RUNNING, WAITING):
                    labels[key] = ",".join(_rename(labels.get(key, ""), self._names))
                key_ = tuple(sorted(labels.items()))
                # Two engine-name sets may map to one name set: keep the newest.
                if key_ not in merged or s.value > merged[key_].value:
                    merged[key_] = s._replace(labels=labels)
            renamed.samples = list(merged.values())
            yield renamed
