"""Tell the wrapper which slot an adapter activation wrote, so only that slot is re-read.

vLLM's ``LoRAModelManager.activate_adapter`` copies an adapter into one free slot of
every LoRA module's stacked tensors, zeroing the slot where the adapter has no weights
for a module. Without this hook the wrapper sees only that the tensors' versions moved
and scans every slot of every module on the next step (see ``facts.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from .facts import CACHE

# (stacked tensor, rank axis): 1 for A [slots, 1, rank, in], 2 for B [slots, 1, out, rank].
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
    per_module = [(name, list(_module_stacks(m))) for name, m in manager.modules.items()]
    stacks = [s for _, module_stacks in per_module for s in module_stacks]
    for tensor, axis in stacks:
        CACHE.get(tensor, axis)  # known before the write (a full scan only if never seen)
    before = CACHE.versions(stacks)
    activated = stock(manager, lora_id)
    if not activated:
        return activated
    slot = manager.lora_index_to_id.index(lora_id)
    lora_model = manager._registered_adapters[lora_id]
    empty = [
        not manager._get_lora_layer_weights(lora_model, name)
        for name, module_stacks in per_module
        for _ in module_stacks
    ]
    CACHE.written(stacks, before, slot, empty)
    return activated
