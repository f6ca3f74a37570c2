"""The interface of a PEFT-type rule, and the config helper the rules share."""

from __future__ import annotations

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


def positive_int(config: Mapping[str, Any], key: str) -> int:
    """``config[key]`` if it is an integer >= 1, else :class:`InvalidAdapterConfig`."""
    value = config.get(key)
    # bool is an int subclass; "r": true is a broken config, not rank 1.
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidAdapterConfig(f"{CONFIG_FILE}: '{key}' must be a positive integer")
    return value
