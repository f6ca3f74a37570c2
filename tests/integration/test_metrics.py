"""/metrics of the real server: per-adapter counters equal what clients were told, the
routing series name adapters as clients do, and a real Prometheus scrapes and answers
PromQL over them (issue 12)."""

from __future__ import annotations

import asyncio
import math
import re
import time

import httpx
import pytest
from support.metrics import sample, samples, scrape
from support.monitoring import dashboard_queries
from support.prometheus import Prometheus
from support.server import ServerInfo

pytestmark = pytest.mark.engine

#: What Grafana substitutes before a dashboard query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": ".*", "$adapter": ".*"}
SERIES_NAME = re.compile(r"\b(hotswap_[a-z0-9_]+|vllm:[a-z0-9_]+)")

#: (model, requests) of the known traffic: two adapters and the base model.
TRAFFIC = (("lora-a", 3), ("lora-b", 2))
MAX_TOKENS = 6


async def _send(server: ServerInfo, model: str, count: int) -> list[dict[str, int]]:
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers,
                                 timeout=120) as client:
        async def one(i: int) -> dict[str, int]:
            resp = await client.post("/v1/completions", json={
                "model": model, "prompt": f"Count to {i + 3}:", "max_tokens": MAX_TOKENS,
                "temperature": 0, "ignore_eos": True})
            resp.raise_for_status()
            usage: dict[str, int] = resp.json()["usage"]
            return usage
        return list(await asyncio.gather(*(one(i) for i in range(count))))


def _traffic(server: ServerInfo) -> dict[str, list[dict[str, int]]]:
    plan = (*TRAFFIC, (server.base_name, 2))
    return {model: asyncio.run(_send(server, model, count)) for model, count in plan}


def _label(server: ServerInfo, model: str) -> str:
    return "base" if model == server.base_name else model


def test_counters_equal_the_usage_clients_got(server: ServerInfo) -> None:
    before = scrape(server)
    usages = _traffic(server)
    # A 404 is attributed without taking a label value for the unknown name.
    missing = httpx.post(f"{server.url}/v1/completions", headers=server.headers,
                         json={"model": "no-such-adapter", "prompt": "x"})
    assert missing.status_code == 404
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    for model, got in usages.items():
        label = _label(server, model)
        kind = "base" if label == "base" else "lora"
        assert delta("hotswap_requests_total", adapter=label, type=kind,
                     endpoint="completions", status_class="2xx") == len(got)
        assert delta("hotswap_engine_requests_total", adapter=label,
                     outcome="finished") == len(got)
        assert delta("hotswap_prompt_tokens_total", adapter=label) == sum(
            u["prompt_tokens"] for u in got)
        assert delta("hotswap_generation_tokens_total", adapter=label) == sum(
            u["completion_tokens"] for u in got) == len(got) * MAX_TOKENS
        for histogram in ("hotswap_time_to_first_token_seconds",
                          "hotswap_e2e_request_latency_seconds",
                          "hotswap_time_per_output_token_seconds",
                          "hotswap_request_queue_time_seconds"):
            assert delta(f"{histogram}_count", adapter=label) == len(got), histogram
    assert delta("hotswap_requests_total", adapter="other", status_class="4xx") == 1
    assert not any(labels.get("adapter") == "no-such-adapter"
                   for labels, _ in samples(after, "hotswap_requests_total"))
    # Stored adapters: the residency gauge names each with one tier.
    for model, _ in TRAFFIC:
        tiers = [labels["tier"] for labels, value in
                 samples(after, "hotswap_adapter_residency")
                 if labels["adapter"] == model and value == 1]
        assert len(tiers) == 1 and tiers[0] in ("gpu", "cpu"), (model, tiers)
    assert sample(after, "hotswap_adapters_registered") >= len(TRAFFIC)
    assert sample(after, "hotswap_storage_saved_bytes") > 0


def test_routing_series_name_adapters_as_clients_do(server: ServerInfo) -> None:
    _traffic(server)
    text = scrape(server)
    vllm_info = samples(text, "vllm:lora_requests_info")
    # vLLM's newest sample (idle now) and its newest busy one, nothing older.
    assert 1 <= len(vllm_info) <= 2, vllm_info
    ran: set[str] = set()
    for labels, _ in vllm_info:
        for key in ("running_lora_adapters", "waiting_lora_adapters"):
            names = {n for n in labels[key].split(",") if n}
            assert not any(n.startswith("hotswap-") for n in names), labels
            ran |= names
        assert labels["max_lora"] == "4"
    assert "lora-b" in ran  # the last adapter the traffic used
    (ours,) = samples(text, "hotswap_lora_requests_info")
    labels, value = ours
    assert abs(value - time.time()) < 60
    resident = set(labels["resident_lora_adapters"].split(","))
    assert {"lora-a", "lora-b"} <= resident
    # Warm in a device slot (max-loras 4 > 2 adapters used): "running" for a router.
    running = set(labels["running_lora_adapters"].split(","))
    assert {"lora-a", "lora-b"} <= running
    # Device slots, plus one per listed name that takes none (aliases of a version).
    assert int(labels["max_lora"]) >= 4
    # The contract the endpoint picker reads is all there.
    for name in ("vllm:num_requests_waiting", "vllm:num_requests_running",
                 "vllm:kv_cache_usage_perc", "vllm:cache_config_info"):
        assert samples(text, name), name


def test_prometheus_scrapes_and_answers_promql(server: ServerInfo,
                                                prometheus: Prometheus) -> None:
    with prometheus.scraping(server) as prom:
        assert prom.wait_up(60), "Prometheus never scraped the server"
        usages = _traffic(server)
        expected = sample(scrape(server), "hotswap_requests_total", adapter="lora-a")
        assert expected >= len(usages["lora-a"])
        # A scrape that started after the traffic holds all of it.
        assert prom.wait_for_value('sum(hotswap_requests_total{adapter="lora-a"})',
                                   expected, seconds=30)
        by_adapter = prom.query_vector(
            "sum by (adapter) (hotswap_generation_tokens_total)")
        assert {"lora-a", "lora-b", "base"} <= set(by_adapter)
        p95 = prom.query('histogram_quantile(0.95, sum by (le) ('
                         'hotswap_time_to_first_token_seconds_bucket{adapter="lora-a"}))')
        assert p95 is not None and math.isfinite(p95) and p95 > 0
        resident = prom.query_vector(
            'max by (adapter) (hotswap_adapter_residency{tier=~"gpu|cpu"})')
        assert resident.get("lora-a") == 1

        # Every dashboard query runs, and names only series this server declares.
        declared = scrape(server)
        for expr in dashboard_queries():
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            prom.query_vector(expr)  # asserts status "success"
            for name in SERIES_NAME.findall(expr):
                family = name.removesuffix("_bucket")
                assert f"# HELP {family} " in declared, (name, expr)
