"""Reading a running server's /metrics, and waiting for a condition on it."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from support.server import ServerInfo


def sample(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` in an exposition ``text`` whose labels include
    ``labels`` (parsed with prometheus_client's parser: label order does not matter)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample called ``name``: its labels and value."""
    return [(dict(s.labels), s.value) for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name]


def scrape(server: ServerInfo) -> str:
    return httpx.get(f"{server.url}/metrics", headers=server.headers).text


def metric(server: ServerInfo, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sample(scrape(server), name, **labels)


def wait_for(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True
