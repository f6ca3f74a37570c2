"""Helpers for the adapter registry tests: the tiny Llama-shaped base config (shared with
the HTTP tests, from ``support.fakes``) and the LoRA writer (``support.loras``) bound to a
base spec.

A module with a unique name rather than ``conftest``: test modules import from it, and
``import conftest`` is ambiguous when several test folders have one."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import torch
from hotswap.adapters.admission import BaseModelSpec
from support.fakes import TINY_LLAMA_CONFIG
from support.loras import lora_key, write_lora

__all__ = ["TINY_LLAMA_CONFIG", "MakeLora", "lora_key", "lora_writer"]


class MakeLora(Protocol):
    def __call__(
        self,
        path: Path,
        *,
        rank: int = 4,
        modules: Iterable[str] = ...,
        layers: Iterable[int] = ...,
        dtype: torch.dtype = ...,
        config: Mapping[str, Any] | None = None,
        edit: Callable[[dict[str, torch.Tensor]], object] | None = None,
    ) -> Path: ...


def lora_writer(spec: BaseModelSpec) -> MakeLora:
    """:func:`support.loras.write_lora` for ``spec``."""
    return partial(write_lora, spec=spec)
