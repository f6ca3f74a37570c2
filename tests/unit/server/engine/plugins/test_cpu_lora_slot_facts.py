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


_SCAN_ALL = facts._scan_all  # tests replace facts._scan_all to catch scans


def _full(t: torch.Tensor, axis: int) -> _StackFacts:
    return _StackFacts.of_slots(_SCAN_ALL(t, axis))


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
    cache.written([(a, 1)], before, slot=2, written=[None])
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
    cache.written([(b, 2)], before, slot=1, written=[facts.EMPTY])
    assert cache.get(b, 2).live == (False,) * SLOTS


def test_a_write_the_cache_was_not_told_of_means_a_full_scan() -> None:
    cache = FactsCache()
    a = _a()
    cache.get(a, 1)
    before = cache.versions([(a, 1)])
    a[0, 0, :1] = 1.0  # an untold write before the told one
    told = cache.versions([(a, 1)])
    a[3, 0, :4] = 1.0
    cache.written([(a, 1)], told, slot=3, written=[None])
    assert cache.get(a, 1).rank == (1, 0, 0, 4)
    a[1, 0, :2] = 1.0  # told with versions from before other writes: ignored
    cache.written([(a, 1)], before, slot=1, written=[None])
    assert cache.get(a, 1) == _full(a, 1)


def test_a_slot_told_live_with_its_rank_needs_no_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = FactsCache()
    b = _b()
    cache.get(b, 2)
    before = cache.versions([(b, 2)])
    b[2, 0, :, :5] = 1.0
    cache.written([(b, 2)], before, slot=2, written=[(True, 5)])
    monkeypatch.setattr(facts, "_scan", lambda *_: pytest.fail("scanned"))
    assert cache.get(b, 2) == _full(b, 2)


RANK = 3


class _Manager:
    """What activate_adapter reads of vLLM's LoRAModelManager; adapters are
    {module name: LoRALayerWeights-like, with lists for the two-slice qkv}."""

    def __init__(self) -> None:
        self.modules: dict[str, Any] = {
            "qkv": SimpleNamespace(lora_a_stacked=(_a(), _a()), lora_b_stacked=(_b(), _b()),
                                   n_slices=2),
            "o": SimpleNamespace(lora_a_stacked=(_a(),), lora_b_stacked=(_b(),), n_slices=1),
            # Like vLLM's logits layer: single tensors, no n_slices.
            "lm_head": SimpleNamespace(lora_a_stacked=_a(), lora_b_stacked=_b()),
        }
        self.lora_index_to_id: list[int | None] = [None] * SLOTS
        self._active_adapters: dict[int, None] = {}
        a, b = torch.rand(RANK, 12) + 0.5, torch.rand(10, RANK) + 0.5
        self._registered_adapters: dict[int, dict[str, Any]] = {
            7: {"qkv": SimpleNamespace(lora_a=[a, a], lora_b=[b, b])},
            # Only the first slice of qkv; o with weights whose last rank row is zero.
            8: {"qkv": SimpleNamespace(lora_a=[a, None], lora_b=[b, None]),
                "o": SimpleNamespace(lora_a=torch.cat([a[:2], torch.zeros(1, 12)]),
                                     lora_b=b)},
            9: {"lm_head": SimpleNamespace(lora_a=a, lora_b=b)},
        }

    def _get_lora_layer_weights(self, lora_model: dict[str, Any], name: str) -> Any:
        return lora_model.get(name)


def _stock(manager: _Manager, lora_id: int) -> bool:
    """vLLM's activate_adapter: reset_lora, then set_lora's corner copies."""
    if lora_id in manager._active_adapters:
        return False
    manager._active_adapters[lora_id] = None
    slot = manager.lora_index_to_id.index(None)
    manager.lora_index_to_id[slot] = lora_id
    for name, module in manager.modules.items():
        weights = manager._registered_adapters[lora_id].get(name)
        a_stacks, b_stacks = module.lora_a_stacked, module.lora_b_stacked
        if isinstance(a_stacks, torch.Tensor):
            a_stacks, b_stacks = (a_stacks,), (b_stacks,)
        for t in (*a_stacks, *b_stacks):
            t[slot] = 0
        if weights is None:
            continue
        lora_a = weights.lora_a if isinstance(weights.lora_a, list) else [weights.lora_a]
        lora_b = weights.lora_b if isinstance(weights.lora_b, list) else [weights.lora_b]
        for t, w in (*zip(a_stacks, lora_a, strict=True), *zip(b_stacks, lora_b, strict=True)):
            if w is not None:
                t[slot, 0, : w.shape[0], : w.shape[1]] = w
    return True


def _no_scans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(facts, "_scan", lambda *_: pytest.fail("slot scanned"))
    monkeypatch.setattr(facts, "_scan_all", lambda *_: pytest.fail("full scan"))


def _stacks(module: Any) -> list[tuple[torch.Tensor, int]]:
    a, b = module.lora_a_stacked, module.lora_b_stacked
    if isinstance(a, torch.Tensor):
        a, b = (a,), (b,)
    return [(t, 1) for t in a] + [(t, 2) for t in b]


@pytest.fixture
def primed(monkeypatch: pytest.MonkeyPatch) -> tuple[FactsCache, _Manager]:
    """A fresh cache for the hook, and a manager primed as the plugin does at creation."""
    cache = FactsCache()
    monkeypatch.setattr(activation, "CACHE", cache)
    manager = _Manager()
    activation.prime(manager)
    return cache, manager


def test_activation_tells_the_slot_from_the_weights_shapes(
        monkeypatch: pytest.MonkeyPatch, primed: tuple[FactsCache, _Manager]) -> None:
    cache, manager = primed
    assert activation.activate_adapter(_stock, manager, 7)
    assert activation.activate_adapter(_stock, manager, 8)
    _no_scans(monkeypatch)  # every written slot is known from the weights' shapes
    qkv, o, head = (manager.modules[n] for n in ("qkv", "o", "lm_head"))
    for t, axis in _stacks(qkv):
        assert cache.get(t, axis).rank[:2] == (RANK, RANK if t is qkv.lora_a_stacked[0]
                                                or t is qkv.lora_b_stacked[0] else 0)
    # Adapter 8's o has a zero last rank row: told rank 3 where a scan finds 2. A pack
    # then multiplies one zero row; a rank below the real one would drop weights.
    a_o = o.lora_a_stacked[0]
    assert cache.get(a_o, 1).rank[:2] == (0, RANK)
    assert _full(a_o, 1).rank[:2] == (0, 2)
    assert cache.get(head.lora_b_stacked, 2).live == (False,) * SLOTS
    for name in ("qkv", "o"):
        for t, axis in _stacks(manager.modules[name]):
            told, scanned = cache.get(t, axis), _full(t, axis)
            assert all(k or not s for k, s in zip(told.live, scanned.live, strict=True))
            assert all(k >= s for k, s in zip(told.rank, scanned.rank, strict=True))


def test_a_layer_of_unknown_layout_has_its_slot_scanned(
        monkeypatch: pytest.MonkeyPatch, primed: tuple[FactsCache, _Manager]) -> None:
    cache, manager = primed
    assert activation.activate_adapter(_stock, manager, 9)  # lm_head: no n_slices
    monkeypatch.setattr(facts, "_scan_all", lambda *_: pytest.fail("full scan"))
    head = manager.modules["lm_head"]
    assert cache.get(head.lora_b_stacked, 2) == _full(head.lora_b_stacked, 2)
    assert cache.get(head.lora_b_stacked, 2).rank[0] == RANK


@pytest.mark.parametrize("weights", [
    SimpleNamespace(lora_a=torch.ones(RANK, 12), lora_b=torch.ones(10, RANK)),  # 1 for 2
    SimpleNamespace(lora_a=[torch.ones(RANK, 12)], lora_b=[torch.ones(20, RANK)]),  # regrouped
])
def test_weights_not_one_per_slice_are_left_to_a_scan(weights: Any) -> None:
    module = _Manager().modules["qkv"]
    assert activation._slot_facts(module, _stacks(module), weights) == [None] * 4


def test_primed_at_creation_the_first_activation_scans_no_whole_tensor(
        monkeypatch: pytest.MonkeyPatch, primed: tuple[FactsCache, _Manager]) -> None:
    cache, manager = primed
    monkeypatch.setattr(facts, "_scan_all", lambda *_: pytest.fail("full scan"))
    assert activation.activate_adapter(_stock, manager, 7)
    for t in manager.modules["qkv"].lora_b_stacked:
        assert cache.get(t, 2).rank == (RANK, 0, 0, 0)


def test_activating_an_active_adapter_walks_no_module(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = FactsCache()
    monkeypatch.setattr(activation, "CACHE", cache)
    manager = _Manager()
    assert activation.activate_adapter(_stock, manager, 7)
    monkeypatch.setattr(activation, "_module_stacks", lambda *_: pytest.fail("walked"))
    assert not activation.activate_adapter(_stock, manager, 7)  # vLLM's LRU, every step
