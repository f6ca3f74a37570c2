"""The adapter label is bounded: at most ``limit`` names, the rest ``other``; a name
that goes frees its value and its series."""

from __future__ import annotations

from hotswap.server.metrics.labels import BASE, OTHER, AdapterLabels
from hotswap.server.metrics.requests import LABELS, PROMPT_TOKENS, forget_adapters
from prometheus_client import generate_latest


def test_names_past_the_limit_are_other_and_a_freed_value_is_reused() -> None:
    labels = AdapterLabels(2)
    assert labels.of(None, "base") == (BASE, BASE)
    assert labels.of("a", "lora") == ("a", "lora")
    assert labels.of("b", "prefix") == ("b", "prefix")
    assert labels.of("c", "lora") == (OTHER, "lora")
    assert labels.of("a", "lora") == ("a", "lora")  # kept names stay kept
    assert labels.existing("c") == (OTHER, "unknown")
    assert labels.existing("b") == ("b", "prefix")  # without taking a value
    assert labels.forget("a") and not labels.forget("a")
    assert labels.of("c", "lora") == ("c", "lora")
    assert set(labels.kept()) == {"b", "c"}


def test_thousands_of_names_make_a_bounded_number_of_series() -> None:
    labels = AdapterLabels(10)
    values = {labels.of(f"adapter-{i}", "lora")[0] for i in range(5000)}
    assert len(values) == 11 and OTHER in values


def test_forgetting_an_adapter_drops_its_series() -> None:
    name = "metrics-forget-me"
    assert LABELS.of(name, "lora") == (name, "lora")
    PROMPT_TOKENS.labels(name, "lora").inc(7)
    assert f'adapter="{name}"' in generate_latest().decode()
    forget_adapters({name})
    assert f'adapter="{name}"' not in generate_latest().decode()
    assert name not in LABELS.kept()
