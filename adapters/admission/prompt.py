"""The prompt-learning rules: one ``prompt_embeddings`` tensor whose width fits the base."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import (
    BaseModelMismatch,
    MalformedWeights,
    MissingWeights,
    UnexpectedTensor,
    UnsupportedFeature,
)
from .base_model import BaseModelSpec
from .files import WEIGHTS_FILE, TensorInfo
from .limits import AdmissionLimits
from .rule import RuleResult, integer, positive_int

#: Sizes PEFT records for prompt learning; only type-checked, the tensor shape is the truth.
_SIZE_FIELDS = ("token_dim", "num_layers", "num_attention_heads")


class _PromptLearningRule:
    """One ``prompt_embeddings`` tensor of ``[num_virtual_tokens, width]``."""

    def width(self, spec: BaseModelSpec) -> int:
        raise NotImplementedError

    def check(
        self,
        config: Mapping[str, Any],
        tensors: Mapping[str, TensorInfo],
        spec: BaseModelSpec,
        limits: AdmissionLimits,
    ) -> RuleResult:
        n = positive_int(config, "num_virtual_tokens")
        if n > limits.max_virtual_tokens:
            raise UnsupportedFeature(
                f"num_virtual_tokens {n} exceeds this server's cap {limits.max_virtual_tokens}"
            )
        for key in _SIZE_FIELDS:
            if config.get(key) is not None:
                integer(config[key], f"'{key}'", 1)
        submodules = config.get("num_transformer_submodules")
        # 2 means encoder-decoder (seq2seq); the server runs decoder-only models.
        if submodules is not None and integer(submodules, "'num_transformer_submodules'", 1) != 1:
            raise UnsupportedFeature("num_transformer_submodules must be 1 (decoder-only)")
        extra = sorted(set(tensors) - {"prompt_embeddings"})
        if extra:
            raise UnexpectedTensor(f"unexpected tensors: {', '.join(extra)}")
        if "prompt_embeddings" not in tensors:
            raise MissingWeights(f"{WEIGHTS_FILE} has no 'prompt_embeddings' tensor")
        shape = tensors["prompt_embeddings"].shape
        width = self.width(spec)
        if len(shape) != 2 or shape[0] != n:
            raise MalformedWeights(
                f"prompt_embeddings has shape {list(shape)}, expected [{n}, {width}]"
            )
        if shape[1] != width:
            raise BaseModelMismatch(
                f"prompt_embeddings has width {shape[1]}, base model {spec.model_id} needs "
                f"{width}: the adapter was trained for another base model"
            )
        return RuleResult(num_virtual_tokens=n)

    def max_params(self, spec: BaseModelSpec, limits: AdmissionLimits) -> int:
        return limits.max_virtual_tokens * self.width(spec)


class PromptTuningRule(_PromptLearningRule):
    """PROMPT_TUNING and P_TUNING: PEFT saves both as the soft prompt ``[n, hidden]``
    (for P_TUNING, the prompt encoder's output)."""

    def width(self, spec: BaseModelSpec) -> int:
        return spec.hidden_size


class PrefixTuningRule(_PromptLearningRule):
    """PREFIX_TUNING: learned keys and values for every layer, ``[n, layers*2*kv*hd]``."""

    def width(self, spec: BaseModelSpec) -> int:
        return spec.num_layers * 2 * spec.num_key_value_heads * spec.head_dim
