"""The ``/metrics`` body: refresh what is read at scrape time, then expose every series.

At a scrape, once the server is serving (at most every :data:`REFRESH_MIN_S`, however
many scrapers poll: routers poll often, and each refresh is one call into the engine
loop):

- residency per adapter and tier is asked of the engine and the store is listed
  (cached for :data:`LISTING_TTL_S`: a listing reads a file per adapter), to set the
  residency, eviction and storage series (adapters.py), and to free the label values
  of adapters that are gone (labels.py);
- vLLM's ``vllm:lora_requests_info`` is rewritten to name adapters as clients send them
  in ``model`` (the engine knows them as ``hotswap-<engine id>``): the Gateway API
  inference extension's endpoint picker compares those names with the request's model;
- ``hotswap_lora_requests_info`` is published for routers: the same labels, where
  ``running_lora_adapters`` also lists adapters warm in the engine while idle (vLLM's
  series forgets them the moment their last request ends, so a router can not prefer
  the replica that has an adapter warm), for every adapter type. docs/metrics.md says
  how to point a router at it.

Nothing here creates or revives a serving-table record: a scrape only reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from ...adapters.names import DEFAULT_TAG
from ..deps import AppState, Serving
from ..engine.interface import KIND_OF_PEFT_TYPE, Residency
from ..serving.table import AdapterState
from . import adapters as series
from .labels import OTHER
from .requests import LABELS, forget_adapters

log = logging.getLogger(__name__)

VLLM_LORA_INFO = "vllm:lora_requests_info"
RUNNING, WAITING, MAX_LORA = "running_lora_adapters", "waiting_lora_adapters", "max_lora"
#: A store listing reads a small file per adapter: at most this often.
LISTING_TTL_S = 10.0
#: Residency and routing series are refreshed at most this often.
REFRESH_MIN_S = 1.0
#: vLLM's name for an adapter: ``hotswap-<engine id>`` (engine/vllm.py).
ENGINE_NAME_PREFIX = "hotswap-"

LORA_INFO = Gauge(
    "hotswap_lora_requests_info",
    "For adapter-affinity routers, in the format of vllm:lora_requests_info (value: the "
    "time of the refresh): running_lora_adapters = adapters with requests running or "
    "warm in the engine (no load needed), waiting_lora_adapters = adapters with requests "
    "waiting, resident_lora_adapters = every adapter loaded in memory; all adapter types; "
    "names as clients send them in model. max_lora counts device slots, plus one per "
    "listed name that takes none (aliases, prompt and prefix adapters).",
    [MAX_LORA, RUNNING, WAITING, "resident_lora_adapters"])
READY = Gauge(
    "hotswap_ready",
    "1 while the server is ready for inference (/ready 200): the model and start-up "
    "adapters are loaded, and it is not draining or dying.")

CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass(frozen=True)
class _Version:
    """One stored adapter version, as a listing shows it."""

    digest: str
    name: str
    kind: str
    size: int
    #: Every ``model`` id that reaches it: ``name`` for the latest tag, ``name:tag``.
    model_ids: tuple[str, ...]


class Scraper:
    """One per app: the last listing, and the tiers the last refresh saw (evictions)."""

    def __init__(self) -> None:
        self._versions: list[_Version] = []
        self._listed_at = float("-inf")
        self._refreshed_at = float("-inf")
        self._tiers: dict[str, Residency] = {}  # digest -> tier at the last refresh
        self._lock = asyncio.Lock()

    async def render(self, state: AppState) -> bytes:
        READY.set(1 if state.ready else 0)
        serving = state.serving
        if serving is None:
            return generate_latest(REGISTRY)
        try:
            async with self._lock:  # one refresh at a time; the rest reuse it
                if time.monotonic() - self._refreshed_at >= REFRESH_MIN_S:
                    await self._refresh(serving)
                    self._refreshed_at = time.monotonic()
        except Exception as exc:  # a scrape must still answer with what it has
            log.warning("metrics refresh failed: %s", exc)
        return generate_latest(_Translated(self._engine_names(serving)))

    def _engine_names(self, serving: Serving) -> dict[str, list[str]]:
        """Engine name -> the model ids clients reach that version by (no I/O: every id
        this process ever gave, by its first name, then the listing's aliases)."""
        names = {f"{ENGINE_NAME_PREFIX}{spec.engine_id}": [spec.name]
                 for spec in serving.table.known_specs()}
        for v in self._versions:
            engine_id = serving.table.engine_id_of(v.digest)
            if engine_id is not None:
                names[f"{ENGINE_NAME_PREFIX}{engine_id}"] = list(v.model_ids)
        return names

    async def _list(self, serving: Serving) -> None:
        versions: dict[str, list[str]] = {}
        found: dict[str, _Version] = {}
        entries = await serving.service.list_versions()
        for entry, tags in entries:
            for tag, manifest in sorted(tags.items()):
                model_id = entry.name if tag == DEFAULT_TAG else f"{entry.name}:{tag}"
                versions.setdefault(manifest.digest, []).append(model_id)
                found.setdefault(manifest.digest, _Version(
                    manifest.digest, entry.name, KIND_OF_PEFT_TYPE[manifest.peft_type],
                    manifest.size_bytes, ()))
        self._versions = [_Version(v.digest, v.name, v.kind, v.size,
                                   tuple(versions[v.digest])) for v in found.values()]
        # Label values of adapters neither stored nor held by a request go back.
        stored = {entry.name for entry, _ in entries}
        forget_adapters(set(LABELS.kept()) - stored - serving.table.names_in_use())

    async def _refresh(self, serving: Serving) -> None:
        if time.monotonic() - self._listed_at > LISTING_TTL_S:
            await self._list(serving)
            self._listed_at = time.monotonic()
        residencies = await serving.table.residency()

        series.RESIDENCY.clear()
        counts: dict[tuple[str, str, Residency], int] = {}
        tiers: dict[str, Residency] = {}
        warm: list[str] = []
        hot: list[str] = []
        for v in self._versions:
            tier = residencies.of(v.digest)
            if tier is None:
                continue
            label, kind = LABELS.existing(v.name)
            if label == OTHER:
                kind = v.kind
            key = (label, kind, tier)
            counts[key] = counts.get(key, 0) + 1
            tiers[v.digest] = tier
            if tier != "disk":
                warm += v.model_ids
            if tier == "gpu" or (tier == "cpu" and v.kind != "lora"):
                hot += v.model_ids  # served without a load or a slot change
            self._count_eviction(v.digest, tier, label, kind,
                                 serving.table.state(v.digest))
        self._tiers = tiers
        for (label, kind, tier), count in counts.items():
            series.RESIDENCY.labels(label, kind, tier).set(count)

        stored = sum(v.size for v in self._versions)
        base = serving.service.base_model_bytes or 0
        series.REGISTERED.set(sum(len(v.model_ids) for v in self._versions))
        series.VERSIONS.set(len(self._versions))
        series.STORED_BYTES.set(stored)
        series.BASE_BYTES.set(base)
        series.SAVED_BYTES.set(max(len(self._versions) * base - stored, 0))

        self._publish_routing(serving, hot, warm)

    def _count_eviction(self, digest: str, tier: Residency, label: str, kind: str,
                        state: AdapterState | None) -> None:
        before = self._tiers.get(digest)
        if before is None or series.TIERS.index(tier) <= series.TIERS.index(before):
            return
        # Down a tier while this process holds it loaded: the engine's own doing (an
        # unload or a retirement changes the state first).
        if state is AdapterState.RESIDENT:
            series.EVICTIONS.labels(label, kind, before).inc()

    def _publish_routing(self, serving: Serving, hot: list[str], warm: list[str]) -> None:
        names = self._engine_names(serving)
        running = set(hot)
        for engine_id in serving.table.ids_in_flight():
            running |= set(names.get(f"{ENGINE_NAME_PREFIX}{engine_id}", []))
        waiting: set[str] = set()
        latest = _latest_vllm_lora_info()
        if latest is not None:
            running |= set(_rename(latest.get(RUNNING, ""), names))
            waiting = set(_rename(latest.get(WAITING, ""), names))
        # The picker's "free slot" test is len(running) + len(waiting) < max_lora; only
        # LoRA versions take slots, once each however many names reach them.
        slots: set[str] = set()
        by_id = {m: v for v in self._versions for m in v.model_ids}
        for model_id in running | waiting:
            version = by_id.get(model_id)
            if version is None or version.kind == "lora":
                slots.add(version.digest if version else model_id)
        max_lora = serving.engine.max_loras + len(running) + len(waiting) - len(slots)
        LORA_INFO.clear()
        LORA_INFO.labels(str(max_lora), ",".join(sorted(running)), ",".join(sorted(waiting)),
                         ",".join(sorted(set(warm)))).set(time.time())


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
    """The default registry, with vLLM's lora info naming adapters as clients do, and
    only its newest sample and newest non-empty one (vLLM keeps one sample per set of
    adapters ever seen together, forever; routers read the newest)."""

    def __init__(self, names: Mapping[str, list[str]]) -> None:
        self._names = names

    def collect(self) -> Iterator[Metric]:
        for family in REGISTRY.collect():
            if family.name != VLLM_LORA_INFO:
                yield family
                continue
            newest = max(family.samples, key=lambda s: s.value, default=None)
            busy = [s for s in family.samples if s.labels.get(RUNNING) or
                    s.labels.get(WAITING)]
            newest_busy = max(busy, key=lambda s: s.value, default=None)
            renamed = Metric(family.name, family.documentation, family.type)
            for s in {id(x): x for x in (newest_busy, newest) if x is not None}.values():
                labels = dict(s.labels)
                for key in (RUNNING, WAITING):
                    labels[key] = ",".join(_rename(labels.get(key, ""), self._names))
                renamed.samples.append(s._replace(labels=labels))
            yield renamed
