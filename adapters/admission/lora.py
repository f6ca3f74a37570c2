"""The LoRA rule: config options, tensor names and shapes against the base model."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import (
    BaseModelMismatch,
    InvalidAdapterConfig,
    MalformedWeights,
    MissingWeights,
    RankTooHigh,
    UnexpectedTensor,
    UnknownTargetModule,
    UnsupportedFeature,
    UnsupportedTargetModule,
)
from .base_model import BaseModelSpec, ModuleShape
from .files import CONFIG_FILE, WEIGHTS_FILE, TensorInfo
from .limits import AdmissionLimits
from .rule import RuleResult, integer, number, positive_int

#: Modules the base model has but adapters may not target. Both would need LoRA on the
#: vocabulary-sized embedding / logits, which vLLM supports only narrowly, costs
#: vocab x rank per token on the CPU path, and on tied-embedding models (the default
#: SmolLM2) the two are one weight, so an adapter on either changes both. PEFT also saves
#: them as full copies (modules_to_save), which defeats small adapters.
UNSUPPORTED_MODULES = frozenset({"lm_head", "embed_tokens"})

# PEFT saves ``base_model.model.model.layers.<i>.<parent>.<module>.lora_<A|B>.weight``;
# some exporters drop the ``base_model.model.`` prefix (vLLM accepts both).
_LORA_KEY = re.compile(
    r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(\w+)\.(\w+)\.lora_([AB])\.weight$"
)
_ANY_LORA_KEY = re.compile(r"(?:^|\.)(\w+)\.lora_(?:embedding_)?[AB](?:\.weight)?$")

#: Config options whose non-default value vLLM would ignore or apply wrongly.
_LORA_UNSUPPORTED_OPTIONS: dict[str, str] = {
    "use_dora": "DoRA",
    "modules_to_save": "modules_to_save (full copies of base modules)",
    "rank_pattern": "rank_pattern (per-module ranks; scaling would be computed wrongly)",
    "alpha_pattern": "alpha_pattern (per-module alphas; scaling would be computed wrongly)",
    "lora_bias": "LoRA bias",
    "fan_in_fan_out": "fan_in_fan_out (transposed Conv1D weights)",
    "layer_replication": "layer_replication",
    "target_parameters": "target_parameters",
    "trainable_token_indices": "trainable_token_indices",
    "alora_invocation_tokens": "activated LoRA (aLoRA)",
    "use_qalora": "QA-LoRA",
}

#: Real configs use alpha = r..4r with r <= 512 (vLLM's largest max_lora_rank); the cap
#: only keeps absurd output scales (alpha / r) out.
MAX_LORA_ALPHA = 65536.0


class LoraRule:
    """LoRA on the decoder projections (q/k/v/o, gate/up/down)."""

    def check(
        self,
        config: Mapping[str, Any],
        tensors: Mapping[str, TensorInfo],
        spec: BaseModelSpec,
        limits: AdmissionLimits,
    ) -> RuleResult:
        modules = spec.modules()
        rank = positive_int(config, "r")
        alpha = number(config.get("lora_alpha"), "'lora_alpha'", 0, MAX_LORA_ALPHA, low_open=True)
        if rank > limits.max_lora_rank:
            raise RankTooHigh(
                f"LoRA rank {rank} exceeds this server's max_lora_rank {limits.max_lora_rank}"
            )
        _check_values(config, spec)
        for key, what in _LORA_UNSUPPORTED_OPTIONS.items():
            if config.get(key):
                raise UnsupportedFeature(f"{what} is not supported ({key} is set)")
        bias = config.get("bias", "none")
        if bias != "none":
            raise UnsupportedFeature(f"LoRA bias={bias!r} is not supported (use 'none')")
        self._check_target_names(config.get("target_modules"), modules)

        pairs: dict[tuple[int, str], dict[str, tuple[int, ...]]] = {}
        for name, info in tensors.items():
            layer, module, which = self._parse_key(name, modules)
            if layer >= spec.num_layers:
                raise BaseModelMismatch(
                    f"tensor {name} is for layer {layer}, but base model {spec.model_id} has "
                    f"{spec.num_layers} layers: the adapter was trained for another base model"
                )
            if len(info.shape) != 2:
                raise MalformedWeights(f"tensor {name} has shape {list(info.shape)}, expected 2-D")
            pairs.setdefault((layer, module), {})[which] = info.shape
        if not pairs:
            raise MissingWeights(f"{WEIGHTS_FILE} holds no LoRA tensors")

        for (layer, module), found in sorted(pairs.items()):
            where = f"model.layers.{layer}.{modules[module].parent}.{module}"
            if set(found) != {"A", "B"}:
                raise MalformedWeights(f"{where}: lora_A and lora_B must both be present")
            (r_a, in_f), (out_f, r_b) = found["A"], found["B"]
            if r_a != r_b:
                raise MalformedWeights(f"{where}: lora_A has rank {r_a} but lora_B has rank {r_b}")
            if r_a > limits.max_lora_rank:
                raise RankTooHigh(
                    f"{where}: rank {r_a} exceeds this server's max_lora_rank "
                    f"{limits.max_lora_rank}"
                )
            if r_a != rank:
                raise MalformedWeights(f"{where}: tensors have rank {r_a}, config says r={rank}")
            shape = modules[module]
            if (in_f, out_f) != (shape.in_features, shape.out_features):
                raise BaseModelMismatch(
                    f"{where}: adapter has in={in_f} out={out_f}, base model {spec.model_id} "
                    f"has in={shape.in_features} out={shape.out_features}: the adapter was "
                    "trained for another base model"
                )
        targets = tuple(sorted({module for _, module in pairs}))
        return RuleResult(rank=rank, alpha=alpha, target_modules=targets)

    def max_params(self, spec: BaseModelSpec, limits: AdmissionLimits) -> int:
        """Every projection of every layer at ``max_lora_rank``: A is r x in, B out x r."""
        per_layer = sum(s.in_features + s.out_features for s in spec.modules().values())
        return spec.num_layers * limits.max_lora_rank * per_layer

    @staticmethod
    def _check_target_names(targets: object, modules: Mapping[str, ModuleShape]) -> None:
        # A string is a regex (or "all-linear"); PEFT expands it when training, so the
        # tensor names are the truth and are checked below.
        if targets is None or isinstance(targets, str):
            return
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise InvalidAdapterConfig(
                f"{CONFIG_FILE}: 'target_modules' must be a list of strings or a string"
            )
        for target in targets:
            # PEFT >= 0.14 may save full module paths ("model.layers.0.self_attn.q_proj").
            _classify_module(target.rsplit(".", 1)[-1], modules)

    @staticmethod
    def _parse_key(name: str, modules: Mapping[str, ModuleShape]) -> tuple[int, str, str]:
        m = _LORA_KEY.fullmatch(name)
        if m is None:
            if "lora_magnitude_vector" in name:
                raise UnsupportedFeature(f"tensor {name}: DoRA is not supported")
            generic = _ANY_LORA_KEY.search(name)
            if generic is not None:
                _classify_module(generic.group(1), modules)
            if name.endswith(".bias") and ".lora_" in name:
                raise UnsupportedFeature(f"tensor {name}: LoRA bias is not supported")
            raise UnexpectedTensor(f"tensor {name} is not a LoRA weight of a decoder projection")
        layer, parent, module, which = int(m[1]), m[2], m[3], m[4]
        _classify_module(module, modules)
        if modules[module].parent != parent:
            raise UnknownTargetModule(
                f"tensor {name}: the base model has no module {parent}.{module}"
            )
        return layer, module, which


def _check_values(config: Mapping[str, Any], spec: BaseModelSpec) -> None:
    """Types and ranges of the other fields vLLM or PEFT read; the options refused as
    unsupported are type-checked first, so a mistyped one says so."""
    if config.get("lora_dropout") is not None:
        number(config["lora_dropout"], "'lora_dropout'", 0, 1)
    if not isinstance(config.get("use_rslora", False), bool):
        raise InvalidAdapterConfig(f"{CONFIG_FILE}: 'use_rslora' must be true or false")
    layers = config.get("layers_to_transform")
    if layers is not None:
        for layer in layers if isinstance(layers, list) else [layers]:
            integer(layer, "'layers_to_transform' entry", 0, spec.num_layers - 1)
    for key in ("rank_pattern", "alpha_pattern"):
        pattern = config.get(key)
        if pattern is None:
            continue
        if not isinstance(pattern, dict):
            raise InvalidAdapterConfig(f"{CONFIG_FILE}: '{key}' must be an object")
        for module, value in pattern.items():
            what = f"'{key}' value for {module!r}"
            if key == "rank_pattern":
                integer(value, what, 1)
            else:
                number(value, what, 0, MAX_LORA_ALPHA, low_open=True)


def _classify_module(module: str, modules: Mapping[str, ModuleShape]) -> None:
    if module in modules:
        return
    if module in UNSUPPORTED_MODULES:
        raise UnsupportedTargetModule(
            f"target module {module!r} is not supported: adapters may target {sorted(modules)}"
        )
    raise UnknownTargetModule(
        f"target module {module!r} does not exist in the base model (it has "
        f"{sorted(modules)}): the adapter was likely trained for another architecture"
    )
