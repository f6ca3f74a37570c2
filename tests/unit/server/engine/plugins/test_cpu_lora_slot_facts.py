"""Slot facts of stacked LoRA tensors: kept per slot across adapter activations, and always
equal to a full scan of the tensor."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hotswap.server.engine.plugins.cpu_lora import activation, facts
from hotswap.server.engine.plugins.cpu_lora.facts import FactsCache, _StackFacts

SLOTS, MAX_RANK = 4, 8


def _a() -> torch.Tensor:
    return torch.zeros(SLOTS, 1, MAX_RANK, 12)


def _b() -> torch.Tensor:
    return torch.zeros(SLOTS, 1, 10, MAX_RANK)


def _full(t: torch.Tensor, axis: int) -> _StackFacts:
    return _StackFacts.of(t, axis)


def test_full_scan_finds_live_slots_and_real_ranks() -> None:
    a = _a()
    a[1, 0, :3] = 1.0  # rank 3
    a[3, 0, 5] = 2.0  # rank 6: a zero row below the last non-zero one still counts
    got = _StackFacts.of(a, 1)
    assert got.live == (False, True, False, True)
    assert got.rank == (0, 3, 0, 6)
    b = _b()
    b[2, 0, :, :4] = 1.0
    assert _StackFacts.of(b, 2).rank == (0, 0, 4, 0)


def test_written_slot_is_rescanned_alone_and_matches_a_full_scan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = FactsCache()
    a = _a()
    a[0, 0, :2] = 1.0
    assert cache.get(a, 1).rank == (2, 0, 0, 0)
    before = cache.versions([(a, 1)])
    a[2, 0, :5] = 1.0
    cache.written([(a, 1)], before, slot=2, empty=[False])
    expected = _full(a, 1)
    scanned: list[int] = []
    real_scan = facts._scan
    monkeypatch.setattr(facts, "_scan", lambda t, axis, slot: scanned.append(slot)
                        or real_scan(t, axis, slot))
    monkeypatch.setattr(facts, "_scan_all", lambda *_: pytest.fail("full scan"))
    assert cache.get(a, 1) == expected
    assert cache.get(a, 1).rank == (2, 0, 5, 0)
    assert scanned == [2]  # once, then cached


def test_a_zeroed_slot_needs_no_scan() -> None:
    cache = FactsCache()
    b = _b()
    b[1, 0, :, :3] = 1.0
    cache.get(b, 2)
    before = cache.versions([(b, 2)])
    b[1] = 0
    cache.written([(b, 2)], before, slot=1, empty=[True])
    assert cache.get(b, 2).live == (False,) * SLOTS


def test_a_write_the_cache_was_not_told_of_means_a_full_scan() -> None:
    cache = FactsCache()
    a = _a()
    cache.get(a, 1)
    before = cache.versions([(a, 1)])
    a[0, 0, :1] = 1.0  # an untold write before the told one
    told = cache.versions([(a, 1)])
    a[3, 0, :4] = 1.0
    cache.written([(a, 1)], told, slot=3, empty=[False])
    assert cache.get(a, 1).rank == (1, 0, 0, 4)
    a[1, 0, :2] = 1.0  # told with versions from before other writes: ignored
    cache.written([(a, 1)], before, slot=1, empty=[False])
    assert cache.get(a, 1) == _full(a, 1)


class _Manager:
    """What activate_adapter reads of vLLM's LoRAModelManager."""

    def __init__(self) -> None:
        self.modules: dict[str, Any] = {
            "qkv": SimpleNamespace(lora_a_stacked=(_a(), _a()), lora_b_stacked=(_b(), _b())),
            "lm_head": SimpleNamespace(lora_a_stacked=_a(), lora_b_stacked=_b()),
        }
        self.lora_index_to_id: list[int | None] = [None] * SLOTS
        self._active_adapters: dict[int, None] = {}
        self._registered_adapters = {7: {"qkv"}}

    def _get_lora_layer_weights(self, lora_model: set[str], name: str) -> bool:
        return name in lora_model


def _stock(manager: _Manager, lora_id: int) -> bool:
    if lora_id in manager._active_adapters:
        return False
    manager._active_adapters[lora_id] = None
    slot = manager.lora_index_to_id.index(None)
    manager.lora_index_to_id[slot] = lora_id
    for name, module in manager.modules.items():
        stacks = [*module.lora_a_stacked, *module.lora_b_stacked] if name == "qkv" else [
            module.lora_a_stacked, module.lora_b_stacked]
        for t in stacks:
            t[slot] = 0
            if name in manager._registered_adapters[lora_id]:
                t[slot].view(t.shape[-2], t.shape[-1])[:3, :3] = 1.0
    return True


def test_activation_records_its_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = FactsCache()
    monkeypatch.setattr(activation, "CACHE", cache)
    manager = _Manager()
    assert activation.activate_adapter(_stock, manager, 7)
    # No full scan after the activation: the adapter's slot is scanned (qkv) or known
    # zeroed (lm_head, which the adapter does not target).
    monkeypatch.setattr(facts, "_scan_all", lambda *_: pytest.fail("full scan"))
    qkv, head = manager.modules["qkv"], manager.modules["lm_head"]
    for t in qkv.lora_a_stacked:
        assert cache.get(t, 1).rank == (3, 0, 0, 0)
    for t in qkv.lora_b_stacked:
        assert cache.get(t, 2).rank == (3, 0, 0, 0)
    assert cache.get(head.lora_b_stacked, 2).live == (False,) * SLOTS


def test_primed_at_creation_the_first_activation_scans_no_whole_tensor(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cache = FactsCache()
    monkeypatch.setattr(activation, "CACHE", cache)
    manager = _Manager()
    activation.prime(manager)  # what the plugin does right after vLLM creates the manager
    monkeypatch.setattr(facts, "_scan_all", lambda *_: pytest.fail("full scan"))
    assert activation.activate_adapter(_stock, manager, 7)
    for t in manager.modules["qkv"].lora_b_stacked:
        assert cache.get(t, 2).rank == (3, 0, 0, 0)



def test_activating_an_active_adapter_walks_no_module(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = FactsCache()
    monkeypatch.setattr(activation, "CACHE", cache)
    manager = _Manager()
    assert activation.activate_adapter(_stock, manager, 7)
    monkeypatch.setattr(activation, "_module_stacks", lambda *_: pytest.fail("walked"))
    assert not activation.activate_adapter(_stock, manager, 7)  # vLLM's LRU, every step
