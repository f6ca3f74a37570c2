"""Helpers for the adapter registry tests: the tiny Llama-shaped base config (shared with
the HTTP tests, from ``support.fakes``) and a writer of PEFT-layout LoRA directories
(healthy, or deliberately broken via ``edit``).

A module with a unique name rather than ``conftest``: test modules import from it, and
``import conftest`` is ambiguous when several test folders have one."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from hotswap.adapters.admission import BaseModelSpec
from safetensors.torch import save_file
from support.fakes import TINY_LLAMA_CONFIG

__all__ = ["TINY_LLAMA_CONFIG", "MakeLora", "lora_key", "lora_writer"]

ALL_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PARENT = {
    m: ("mlp" if m in ("gate_proj", "up_proj", "down_proj") else "self_attn") for m in ALL_MODULES
}


def lora_key(layer: int, module: str, which: str) -> str:
    return f"base_model.model.model.layers.{layer}.{PARENT[module]}.{module}.lora_{which}.weight"


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
    """Write a PEFT-layout LoRA adapter (same keys and shapes ``save_pretrained`` writes).

    ``config`` entries override adapter_config.json fields; ``edit`` mutates the tensor
    dict before saving, to craft broken adapters.
    """

    def make(
        path: Path,
        *,
        rank: int = 4,
        modules: Iterable[str] = ALL_MODULES,
        layers: Iterable[int] = (0, 1),
        dtype: torch.dtype = torch.float32,
        config: Mapping[str, Any] | None = None,
        edit: Callable[[dict[str, torch.Tensor]], object] | None = None,
    ) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        modules = tuple(modules)
        shapes = spec.modules()
        gen = torch.Generator().manual_seed(0)
        tensors: dict[str, torch.Tensor] = {}
        for layer in layers:
            for m in modules:
                s = shapes[m]
                tensors[lora_key(layer, m, "A")] = torch.randn(
                    rank, s.in_features, generator=gen
                ).to(dtype)
                tensors[lora_key(layer, m, "B")] = torch.randn(
                    s.out_features, rank, generator=gen
                ).to(dtype)
        if edit is not None:
            edit(tensors)
        save_file(tensors, str(path / "adapter_model.safetensors"))
        cfg: dict[str, Any] = {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": rank,
            "lora_alpha": 2 * rank,
            "target_modules": list(modules),
            "bias": "none",
            "use_dora": False,
            "modules_to_save": None,
            "rank_pattern": {},
            "alpha_pattern": {},
            "base_model_name_or_path": "HuggingFaceTB/tiny-llama-test",
        }
        cfg.update(config or {})
        (path / "adapter_config.json").write_text(json.dumps(cfg))
        return path

    return make
