"""Tell the wrapper which slot an adapter activation wrote, and what it now holds.

vLLM's ``LoRAModelManager.activate_adapter`` copies an adapter into one free slot of
every LoRA module's stacked tensors, zeroing the slot where the adapter has no weights
for a module. Without this hook the wrapper sees only that the tensors' versions moved
and scans every slot of every module on the next step (see ``facts.py``).

What a slot holds follows from the weights vLLM copied: a linear layer's ``set_lora``
zeroes the slot, then copies slice i's A ``[rank, in]`` and B ``[out, rank]`` into its
corner, so the slot is live up to the adapter's rank. Reading that from the shapes
instead of scanning the written slot takes the scan (~55 ms on the bundled model, the
largest part of the pack rebuild) off a cold request's first step. Layouts this does not
know (embeddings, vLLM regrouping packed weights) leave the slot to a scan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from .facts import CACHE, EMPTY, Slot

# (stacked tensor, rank axis): 1 for A [slots, 1, rank, in], 2 for B [slots, 1, out, rank]
# (axes of the [slots, rows, cols] view facts.py scans).
Stack = tuple[torch.Tensor, int]
_ATTRS = (("lora_a_stacked", 1), ("lora_b_stacked", 2))


def _module_stacks(module: Any) -> Iterator[Stack]:
    for attr, axis in _ATTRS:
        value = getattr(module, attr, None)
        tensors = value if isinstance(value, tuple | list) else (value,)
        for t in tensors:
            if isinstance(t, torch.Tensor) and t.dim() >= 3:
                yield t, axis


def prime(manager: Any) -> None:
    """Learn every stacked tensor's slots once, right after vLLM created them: a full
    scan of all of them costs ~0.3 s on 2 cores, which the first adapter request of a
    server's life paid before (the first activation found nothing known)."""
    for module in manager.modules.values():
        for tensor, axis in _module_stacks(module):
            CACHE.get(tensor, axis)


def activate_adapter(stock: Callable[[Any, int], bool], manager: Any, lora_id: int) -> bool:
    """Run vLLM's ``activate_adapter`` and record the one slot it wrote."""
    if lora_id in manager._active_adapters:
        # Already in a slot: vLLM writes nothing. Its LRU manager calls this for every
        # adapter of every step, so the walk over all modules below is skipped here.
        return stock(manager, lora_id)
    per_module = [(name, m, list(_module_stacks(m))) for name, m in manager.modules.items()]
    stacks = [s for _, _, module_stacks in per_module for s in module_stacks]
    before = CACHE.known_versions(stacks)
    activated = stock(manager, lora_id)
    if not activated:
        return activated
    slot = manager.lora_index_to_id.index(lora_id)
    lora_model = manager._registered_adapters[lora_id]
    written = [
        s
        for name, module, module_stacks in per_module
        for s in _slot_facts(module, module_stacks,
                             manager._get_lora_layer_weights(lora_model, name))
    ]
    CACHE.written(stacks, before, slot, written)
    return activated


def _slot_facts(module: Any, stacks: list[Stack], weights: Any) -> list[Slot | None]:
    """What the slot just written holds in each of ``stacks`` (A's slices, then B's),
    from the ``LoRALayerWeights`` vLLM copied there; None where unknown."""
    if not weights:
        return [EMPTY] * len(stacks)  # vLLM's reset_lora zeroed the slot
    n = getattr(module, "n_slices", None)
    a = _per_slice(weights.lora_a, n)
    b = _per_slice(weights.lora_b, n)
    if (a is None or b is None or len(stacks) != 2 * len(a)
            or any(t.dim() != 4 or t.shape[1] != 1 for t, _ in stacks)):
        return [None] * len(stacks)
    # A [rank, in] sits in [slot, 0, :rank, :in], B [out, rank] in [slot, 0, :out, :rank].
    ranks = [None if w is None else w.shape[0] for w in a]
    ranks += [None if w is None else w.shape[1] for w in b]
    # Clamped to the stack's rank size (vLLM copies no more), at -2 for A, -1 for B.
    return [EMPTY if r is None else (True, min(r, t.shape[-2] if axis == 1 else t.shape[-1]))
            for r, (t, axis) in zip(ranks, stacks, strict=True)]


def _per_slice(weights: Any, n_slices: int | None) -> list[torch.Tensor | None] | None:
    """One weight (or None) per slice of a linear layer, as its ``set_lora`` copies them;
    None when vLLM would regroup them first (``expand_packed_lora``) or the layout is not
    the plain one."""
    if not isinstance(n_slices, int) or n_slices < 1:
        return None
    if isinstance(weights, torch.Tensor):
        # Several slices from one tensor is a layer's own override (duplicated or split
        # by output rows): left to a scan.
        return [weights] if n_slices == 1 and weights.dim() == 2 else None
    if isinstance(weights, list | tuple) and len(weights) == n_slices and all(
            w is None or (isinstance(w, torch.Tensor) and w.dim() == 2) for w in weights):
        return list(weights)
    return None
