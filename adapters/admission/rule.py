"""The interface of a PEFT-type rule, and the config-value checks the rules share."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import InvalidAdapterConfig
from .base_model import BaseModelSpec
from .files import CONFIG_FILE, TensorInfo
from .limits import AdmissionLimits


@dataclass(frozen=True)
class RuleResult:
    """The part of the report a PEFT-type rule fills in."""

    rank: int | None = None
    alpha: float | None = None
    target_modules: tuple[str, ...] = ()
    num_virtual_tokens: int | None = None
    warnings: tuple[str, ...] = ()


class PeftRule(Protocol):
    """Checks config and tensor header (names, shapes) of one PEFT type against the base."""

    def check(
        self,
        config: Mapping[str, Any],
        tensors: Mapping[str, TensorInfo],
        spec: BaseModelSpec,
        limits: AdmissionLimits,
    ) -> RuleResult: ...

    def max_params(self, spec: BaseModelSpec, limits: AdmissionLimits) -> int:
        """The most weight values an adapter of this type can have and still pass."""
        ...


def positive_int(config: Mapping[str, Any], key: str) -> int:
    """``config[key]`` if it is an integer >= 1, else :class:`InvalidAdapterConfig`."""
    return integer(config.get(key), f"'{key}'", 1)


def integer(value: object, what: str, low: int, high: int | None = None) -> int:
    """``value`` if it is a JSON integer in ``[low, high]``, else
    :class:`InvalidAdapterConfig` naming the field as ``what``."""
    # bool is an int subclass; "r": true is a broken config, not rank 1.
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < low
        or (high is not None and value > high)
    ):
        accepted = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise InvalidAdapterConfig(f"{CONFIG_FILE}: {what} must be {accepted}, got {_shown(value)}")
    return value


def number(value: object, what: str, low: float, high: float, *, low_open: bool = False) -> float:
    """``value`` if it is a finite JSON number in ``[low, high]`` (``(low, high]`` with
    ``low_open``), else :class:`InvalidAdapterConfig` naming the field as ``what``."""
    # bool is an int subclass: true is not 1.
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (not isinstance(value, float) or math.isfinite(value))
        # Compared as given: float() of a 400-digit JSON integer would overflow.
        and (low < value if low_open else low <= value)
        and value <= high
    ):
        return float(value)
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
    raise InvalidAdapterConfig(
        f"{CONFIG_FILE}: {what} must be a finite number in {interval}, got {_shown(value)}"
    )


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}..."
