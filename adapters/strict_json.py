"""JSON from outside (an adapter's config, its task defaults, a request's schema) read
with bounds: finite numbers only, nesting capped, no recursion over what was read."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any


def nesting_depth(value: object, cap: int) -> int:
    """How deeply lists and objects nest in a parsed JSON value, counted level by level
    (no recursion: a hostile value may nest past Python's recursion limit) and only up
    to one past ``cap``."""
    depth, level = 0, [value]
    while depth <= cap:
        containers = [v for v in level if isinstance(v, dict | list)]
        if not containers:
            break
        depth += 1
        level = [c for v in containers for c in (v.values() if isinstance(v, dict) else v)]
    return depth


def load_bounded(raw: bytes, *, name: str, max_depth: int,
                 error: Callable[[str], Exception]) -> Any:
    """``raw`` parsed, or ``error(reason)`` raised: not JSON, NaN / Infinity / 1e999 (JSON
    has no such numbers; Python's json reads them), nesting over ``max_depth``. ``error``
    must not be a ValueError (json.loads would take it for its own)."""

    def non_finite(literal: str) -> float:
        raise error(f"{name} holds {literal}: numbers must be finite")

    def finite_float(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):  # 1e999 parses to inf
            raise error(f"{name} holds {literal[:40]}: numbers must be finite")
        return value

    try:
        value = json.loads(raw, parse_constant=non_finite, parse_float=finite_float)
    except RecursionError:
        raise error(f"{name} is nested too deeply") from None
    except ValueError as exc:  # bad JSON or UTF-8, or an integer over 4300 digits
        raise error(f"{name} is not valid JSON: {exc}") from None
    if nesting_depth(value, max_depth) > max_depth:
        raise error(f"{name} nests deeper than {max_depth} levels")
    return value
