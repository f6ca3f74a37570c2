"""Prompts as the engine takes them (token ids), and the checks every prompt passes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidRequest


@dataclass(frozen=True)
class Prompt:
    token_ids: list[int]
    #: Text form, for ``echo``.
    text: str


def check_token_ids(ids: Sequence[int], vocab_size: int, param: str) -> None:
    """400 for an empty prompt or an id outside the vocabulary (before any decoding:
    out-of-range ids must be a 400, not a decoder crash)."""
    if not ids:
        raise InvalidRequest("prompt is empty", param=param)
    bad = next((t for t in ids if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise InvalidRequest(f"token id {bad} is outside the vocabulary (0..{vocab_size - 1})",
                             param=param)
