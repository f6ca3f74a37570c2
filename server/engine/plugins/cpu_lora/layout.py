"""One memory layout for a multi-slice layer's stacked LoRA tensors, so that one slot's
packed weights are views of it rather than copies.

vLLM allocates each slice of a merged layer (qkv, gate_up) its own stacked A
``[slots, 1, max_rank, in]`` and B ``[slots, 1, out_i, max_rank]``. The packed matmuls
(``wrapper.py``) want, per step, A of all slices as one ``[slices * rank, in]`` matrix
and B block-diagonal ``[sum(out), slices * rank]``, and building those copies for every
module is the largest cost of the first step after an adapter write: ~40 ms on the
bundled model, paid in a cold adapter's time to first token.

:func:`fuse` (run once, when vLLM has created the LoRA modules) gives each such layer one
A buffer ``[slots, slices * max_rank, in]`` and one B buffer
``[slots, sum(out), slices * max_rank]`` and replaces vLLM's per-slice tensors with views
into them. vLLM then writes each adapter straight into that layout (its ``reset_lora``
and ``set_lora`` only ever touch a slice's own block; B's off-diagonal blocks stay
zero), and a step with one adapter finds that slot's packed A and B ready as
``a[slot]`` and ``b[slot]``. The views share the buffers' version counter, so a write to
any slice invalidates every cache keyed on the versions, as the caches expect.

B's buffer holds the zero blocks too: ``slices`` times the memory of vLLM's own B (for
Llama-3-8B shapes in bf16 at max rank 16 and 4 slots, ~310 MB instead of ~145 MB, against
16 GB of weights), while one-adapter packs no longer take copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Fused:
    """A multi-slice layer's stacked tensors, as views of two buffers."""

    a_views: tuple[torch.Tensor, ...]
    b_views: tuple[torch.Tensor, ...]
    #: ``[slots, slices * max_rank, in]``: rows ordered (slice, rank).
    a: torch.Tensor
    #: ``[slots, sum(out), slices * max_rank]``: slice i's B in rows ``out_0 + ... +
    #: out_{i-1}`` on, columns ``i * max_rank`` on; zero elsewhere.
    b: torch.Tensor

    @property
    def max_rank(self) -> int:
        return int(self.a_views[0].shape[-2])

    def matches(self, lora_a: Sequence[torch.Tensor], lora_b: Sequence[torch.Tensor]) -> bool:
        return (len(lora_a) == len(self.a_views) and len(lora_b) == len(self.b_views)
                and all(x is y for x, y in zip(lora_a, self.a_views, strict=True))
                and all(x is y for x, y in zip(lora_b, self.b_views, strict=True)))


#: Keyed by id() of the layer's first A view (the entry holds it, so the id stays valid).
_FUSED: dict[int, Fused] = {}


def fused(lora_a: Sequence[torch.Tensor], lora_b: Sequence[torch.Tensor]) -> Fused | None:
    """The layout ``lora_a`` and ``lora_b`` are views of, if :func:`fuse` made them."""
    if not lora_a:
        return None
    entry = _FUSED.get(id(lora_a[0]))
    return entry if entry is not None and entry.matches(lora_a, lora_b) else None


def fuse_all(manager: Any) -> None:
    """:func:`fuse` every LoRA module of vLLM's ``LoRAModelManager``."""
    for module in manager.modules.values():
        fuse(module)


def fuse(module: Any) -> None:
    """Give a linear LoRA layer with two or more slices the fused layout (no-op for any
    other layer, or one whose stacks are not the plain ``[slots, 1, rows, cols]``)."""
    lora_a = getattr(module, "lora_a_stacked", None)
    lora_b = getattr(module, "lora_b_stacked", None)
    if not (isinstance(lora_a, tuple) and isinstance(lora_b, tuple)
            and len(lora_a) == len(lora_b) >= 2):
        return
    if fused(lora_a, lora_b) is not None:
        return
    stacks = (*lora_a, *lora_b)
    if not all(isinstance(t, torch.Tensor) and t.dim() == 4 and t.shape[1] == 1
               for t in stacks):
        return
    first = lora_a[0]
    slots, max_rank, dims = first.shape[0], first.shape[-2], first.shape[-1]
    if any(t.shape != first.shape or t.dtype != first.dtype or t.device != first.device
           for t in lora_a):
        return
    if any(t.shape[0] != slots or t.shape[-1] != max_rank or t.dtype != first.dtype
           or t.device != first.device for t in lora_b):
        return
    n = len(lora_a)
    outs = [int(t.shape[-2]) for t in lora_b]
    a = first.new_zeros(slots, n * max_rank, dims)
    b = first.new_zeros(slots, sum(outs), n * max_rank)
    a_views, b_views, row = [], [], 0
    for i, (ta, tb) in enumerate(zip(lora_a, lora_b, strict=True)):
        va = a[:, i * max_rank : (i + 1) * max_rank].unsqueeze(1)
        vb = b[:, row : row + outs[i], i * max_rank : (i + 1) * max_rank].unsqueeze(1)
        va.copy_(ta)  # whatever vLLM wrote already (zeros at start)
        vb.copy_(tb)
        a_views.append(va)
        b_views.append(vb)
        row += outs[i]
    entry = Fused(tuple(a_views), tuple(b_views), a, b)
    module.lora_a_stacked = entry.a_views
    module.lora_b_stacked = entry.b_views
    _FUSED[id(entry.a_views[0])] = entry
