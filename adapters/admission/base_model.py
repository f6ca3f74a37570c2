"""The base model facts admission checks adapters against, read from its ``config.json``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Base-model families whose decoder layers use the Llama projection names and shapes.
LLAMA_LAYOUT_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


@dataclass(frozen=True)
class ModuleShape:
    """A linear projection in every decoder layer: where it lives and its dimensions."""

    parent: str  # "self_attn" or "mlp"
    in_features: int
    out_features: int


@dataclass(frozen=True)
class BaseModelSpec:
    """The base model facts admission needs, taken from its HF ``config.json``."""

    model_id: str
    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any], model_id: str) -> BaseModelSpec:
        """Build from a parsed ``config.json``. Raises ValueError for unsupported layouts."""
        model_type = str(config.get("model_type", ""))
        if model_type not in LLAMA_LAYOUT_MODEL_TYPES:
            raise ValueError(
                f"base model type {model_type!r} is not supported for adapters "
                f"(supported: {sorted(LLAMA_LAYOUT_MODEL_TYPES)})"
            )
        try:
            hidden = int(config["hidden_size"])
            heads = int(config["num_attention_heads"])
            kv_heads = int(config.get("num_key_value_heads") or heads)
            head_dim = int(config.get("head_dim") or hidden // heads)
            return cls(
                model_id=model_id,
                model_type=model_type,
                hidden_size=hidden,
                intermediate_size=int(config["intermediate_size"]),
                num_layers=int(config["num_hidden_layers"]),
                num_attention_heads=heads,
                num_key_value_heads=kv_heads,
                head_dim=head_dim,
                vocab_size=int(config["vocab_size"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"base model config is missing or has a bad field: {exc}") from exc

    def modules(self) -> dict[str, ModuleShape]:
        """Adapter-targetable projections, keyed by PEFT module name."""
        h, i = self.hidden_size, self.intermediate_size
        q = self.num_attention_heads * self.head_dim
        kv = self.num_key_value_heads * self.head_dim
        return {
            "q_proj": ModuleShape("self_attn", h, q),
            "k_proj": ModuleShape("self_attn", h, kv),
            "v_proj": ModuleShape("self_attn", h, kv),
            "o_proj": ModuleShape("self_attn", q, h),
            "gate_proj": ModuleShape("mlp", h, i),
            "up_proj": ModuleShape("mlp", h, i),
            "down_proj": ModuleShape("mlp", i, h),
        }

    @property
    def fingerprint(self) -> str:
        """sha256 of the shape-relevant fields: equal fingerprints accept the same adapters."""
        fields = {
            "model_type": self.model_type,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_layers": self.num_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
        }
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
