"""The one writer of PEFT-layout LoRA dirs for tests: the keys, shapes and config that
``PeftModel.save_pretrained`` writes, for any base model spec, healthy or (through
``config`` overrides and ``edit``) deliberately broken. Adapters made by PEFT itself, for
the reference tests on the real model, are ``support.peft_ref``'s."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from hotswap.adapters.admission import BaseModelSpec
from safetensors.torch import save_file

ALL_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PARENT = {
    m: ("mlp" if m in ("gate_proj", "up_proj", "down_proj") else "self_attn") for m in ALL_MODULES
}


def lora_key(layer: int, module: str, which: str) -> str:
    return f"base_model.model.model.layers.{layer}.{PARENT[module]}.{module}.lora_{which}.weight"


def write_lora(
    path: Path,
    spec: BaseModelSpec,
    *,
    rank: int = 4,
    modules: Iterable[str] = ALL_MODULES,
    layers: Iterable[int] | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    config: Mapping[str, Any] | None = None,
    edit: Callable[[dict[str, torch.Tensor]], object] | None = None,
) -> Path:
    """Write a LoRA for ``spec`` into ``path`` (created) and return it. ``layers``:
    default every layer; ``seed`` changes the weights (and so the digest); ``config``
    entries override adapter_config.json fields; ``edit`` mutates the tensors first."""
    path.mkdir(parents=True, exist_ok=True)
    modules = tuple(modules)
    shapes = spec.modules()
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for layer in range(spec.num_layers) if layers is None else layers:
        for m in modules:
            s = shapes[m]
            tensors[lora_key(layer, m, "A")] = torch.randn(
                rank, s.in_features, generator=gen).to(dtype)
            tensors[lora_key(layer, m, "B")] = torch.randn(
                s.out_features, rank, generator=gen).to(dtype)
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
        "base_model_name_or_path": spec.model_id,
    }
    cfg.update(config or {})
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    return path
