"""Adapter lifecycle series: loads, unloads, evictions, residency, storage.

Loads, failures and unloads are counted where the serving table makes them happen.
Residency and evictions are the engine's own doing (vLLM moves LoRAs between its device
slots and host cache by LRU), so they are read from the engine at each scrape
(:mod:`.scrape`): an eviction is a resident adapter seen one tier lower than at the
previous scrape (moves and returns between two scrapes are not seen).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from ...adapters.metrics import LOAD_SECONDS
from ..engine.interface import AdapterSpec, Residency
from .requests import LABELS, PER_ADAPTER

LOADS = Counter(
    "hotswap_adapter_loads", "Engine loads of adapter versions that succeeded.",
    ["adapter", "type"])
LOAD_FAILURES = Counter(
    "hotswap_adapter_load_failures",
    "Engine loads that failed, by reason: rejected (the engine refused the adapter), "
    "engine (the engine failed), internal.", ["adapter", "type", "reason"])
UNLOADS = Counter(
    "hotswap_adapter_unloads",
    "Adapter versions taken out of the engine, by reason: unload (asked for), retired "
    "(deleted from the store or re-tagged away, after its last request).",
    ["adapter", "type", "reason"])
EVICTIONS = Counter(
    "hotswap_adapter_evictions",
    "Resident adapters the engine moved down a tier on its own, by the tier they left "
    "(gpu: out of a device slot; cpu: out of host memory). Observed at scrapes.",
    ["adapter", "type", "tier"])
RESIDENCY = Gauge(
    "hotswap_adapter_residency",
    "1 for the tier each servable adapter is in now (gpu: in a device slot; cpu: in host "
    "memory, ready without a disk read; disk: stored only). Refreshed at each scrape.",
    ["adapter", "type", "tier"])
REGISTERED = Gauge("hotswap_adapters_registered", "Servable adapter ids (name and name:tag).")
VERSIONS = Gauge("hotswap_adapter_versions_stored", "Distinct adapter versions stored.")
STORED_BYTES = Gauge("hotswap_adapter_store_bytes", "Bytes of the stored adapter versions.")
SAVED_BYTES = Gauge(
    "hotswap_storage_saved_bytes",
    "Bytes saved against one full copy of the base model per stored adapter version.")
BASE_BYTES = Gauge("hotswap_base_model_bytes", "Bytes of the base model's weights.")

PER_ADAPTER.extend([LOADS, LOAD_FAILURES, UNLOADS, EVICTIONS])

TIERS: tuple[Residency, ...] = ("gpu", "cpu", "disk")


def _labels(spec: AdapterSpec) -> tuple[str, str]:
    return LABELS.of(spec.name, spec.kind)


def record_load(spec: AdapterSpec, seconds: float) -> None:
    LOADS.labels(*_labels(spec)).inc()
    LOAD_SECONDS.labels("engine", "store").observe(seconds)


def record_load_failure(spec: AdapterSpec, reason: str) -> None:
    LOAD_FAILURES.labels(*_labels(spec), reason).inc()


def record_unload(spec: AdapterSpec, reason: str) -> None:
    UNLOADS.labels(*_labels(spec), reason).inc()
