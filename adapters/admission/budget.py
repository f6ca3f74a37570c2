"""The byte cap fitted to the base model: no adapter that could pass is larger.

The largest adapter admission accepts is fixed by the base model's shapes and the limits:
for LoRA every projection of every layer at ``max_lora_rank``, for prompt learning
``max_virtual_tokens`` rows of the rule's width, each value in the widest accepted dtype.
:func:`fitted_limits` lowers ``max_total_bytes`` (the cap on an upload, an import, a pull
and the files admitted) to that plus room for the small files, so nothing much bigger than
a real adapter is ever read or written: ~42 MB for SmolLM2-135M at rank 16, not 1 GiB.
"""

from __future__ import annotations

from dataclasses import replace

from ..defaults import MAX_DEFAULTS_BYTES
from .base_model import BaseModelSpec
from .files import FLOAT_DTYPE_BYTES, MAX_CARD_BYTES, MAX_CONFIG_BYTES
from .limits import AdmissionLimits
from .pipeline import RULES

#: The safetensors header (~150 bytes a tensor: 1,120 for an 80-layer LoRA on every
#: projection) and the archive's own headers and padding.
FRAMING_BYTES = 1 << 20


def max_adapter_bytes(spec: BaseModelSpec, limits: AdmissionLimits) -> int:
    """Bytes of the largest adapter of an enabled PEFT type that could pass for ``spec``,
    with its config, task defaults, model card and framing."""
    params = max(
        (RULES[t].max_params(spec, limits) for t in limits.peft_types if t in RULES), default=0
    )
    # The widest dtype admission accepts (F64), so the cap never refuses what the dtype
    # check would admit.
    weights = params * max(FLOAT_DTYPE_BYTES.values())
    return weights + MAX_CONFIG_BYTES + MAX_DEFAULTS_BYTES + MAX_CARD_BYTES + FRAMING_BYTES


def fitted_limits(limits: AdmissionLimits, spec: BaseModelSpec) -> AdmissionLimits:
    """``limits`` with ``max_total_bytes`` lowered to :func:`max_adapter_bytes` (never
    raised above the configured cap)."""
    cap = min(limits.max_total_bytes, max_adapter_bytes(spec, limits))
    return replace(limits, max_total_bytes=cap)
