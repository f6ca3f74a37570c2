"""The fused layout of multi-slice LoRA layers (plugins/cpu_lora/layout.py): vLLM's writes
land in it unchanged, one-adapter packs are views of it, and the packed matmuls give
the same result as on vLLM's own per-slice tensors."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hotswap.server.engine.plugins.cpu_lora import layout

SLOTS, MAX_RANK, HIDDEN = 4, 8, 48
SLICES = (24, 8, 8)  # q, k, v
LORA_IDS = [101, 102, 103, 104]


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _module() -> SimpleNamespace:
    """A qkv layer's stacks as vLLM allocates them (zeros)."""
    return SimpleNamespace(
        lora_a_stacked=tuple(torch.zeros(SLOTS, 1, MAX_RANK, HIDDEN) for _ in SLICES),
        lora_b_stacked=tuple(torch.zeros(SLOTS, 1, n, MAX_RANK) for n in SLICES),
        n_slices=len(SLICES))


def _set_lora(module: Any, slot: int, rank: int, seed: int, dead: tuple[int, ...] = ()) -> None:
    """vLLM's reset_lora + set_lora for one slot: zero it, copy into its corner."""
    for i, (a, b) in enumerate(zip(module.lora_a_stacked, module.lora_b_stacked, strict=True)):
        a[slot] = 0
        b[slot] = 0
        if i not in dead:
            a[slot, 0, :rank, :].copy_(_rand(rank, HIDDEN, seed=seed + i))
            b[slot, 0, :, :rank].copy_(_rand(SLICES[i], rank, seed=seed + 10 + i))


def _reference(y: torch.Tensor, x: torch.Tensor, module: Any, idx: list[int]) -> torch.Tensor:
    out = y.clone()
    offset = 0
    for a, b, size in zip(module.lora_a_stacked, module.lora_b_stacked, SLICES, strict=True):
        for row, slot in enumerate(idx):
            if slot >= 0:
                out[row, offset : offset + size] += x[row] @ a[slot, 0].T @ b[slot, 0].T
        offset += size
    return out


def _set_mapping(wrapper: Any, idx: list[int]) -> None:
    from vllm.lora.layers import LoRAMapping

    ids = tuple(LORA_IDS[s] if s >= 0 else 0 for s in idx)
    wrapper.update_metadata(LoRAMapping(ids, ids, is_prefill=True), list(LORA_IDS),
                            SLOTS + 1, 64)


def test_vllm_writes_land_block_diagonal_and_views_stay_vllm_shaped() -> None:
    module = _module()
    shapes = [t.shape for t in (*module.lora_a_stacked, *module.lora_b_stacked)]
    layout.fuse(module)
    fused = layout.fused(module.lora_a_stacked, module.lora_b_stacked)
    assert fused is not None
    assert [t.shape for t in (*module.lora_a_stacked, *module.lora_b_stacked)] == shapes
    _set_lora(module, slot=2, rank=MAX_RANK, seed=1)
    b = fused.b[2]  # [sum(out), slices * max_rank]
    row = 0
    for i, size in enumerate(SLICES):
        block = b[row : row + size, i * MAX_RANK : (i + 1) * MAX_RANK]
        assert torch.equal(block, module.lora_b_stacked[i][2, 0])
        block.zero_()
        row += size
    assert not b.any()  # nothing outside the diagonal blocks
    assert torch.equal(fused.a[2].view(len(SLICES), MAX_RANK, HIDDEN)[1],
                       module.lora_a_stacked[1][2, 0])
    assert not fused.a[1].any()  # other slots untouched


def test_fuse_leaves_other_layers_alone() -> None:
    single = SimpleNamespace(lora_a_stacked=(torch.zeros(SLOTS, 1, MAX_RANK, HIDDEN),),
                             lora_b_stacked=(torch.zeros(SLOTS, 1, 8, MAX_RANK),))
    logits = SimpleNamespace(lora_a_stacked=torch.zeros(SLOTS, 1, MAX_RANK, HIDDEN),
                             lora_b_stacked=torch.zeros(SLOTS, 1, 8, MAX_RANK))
    ragged = _module()
    ragged.lora_a_stacked = (*ragged.lora_a_stacked[:2], torch.zeros(SLOTS, 1, MAX_RANK, 7))
    for module in (single, logits, ragged):
        before = (module.lora_a_stacked, module.lora_b_stacked)
        layout.fuse(module)
        assert (module.lora_a_stacked, module.lora_b_stacked) == before


@pytest.mark.parametrize(("idx", "ranks", "view"), [
    ([2, 2, 2, 2, 2], {2: MAX_RANK}, True),  # one adapter at full rank: views
    ([2, 2, 2], {2: MAX_RANK // 2}, True),  # half the max rank: still views
    ([2, 2, 2], {2: 3}, False),  # low rank: a trimmed copy is cheaper
    ([1, -1, 1], {1: MAX_RANK}, True),  # rows without an adapter: masked
    ([0, 3, 3, 0, -1], {0: 5, 3: MAX_RANK}, False),  # two adapters: a packed copy
])
def test_packed_matmul_on_the_fused_layout_equals_the_reference(
        wrapper: Any, idx: list[int], ranks: dict[int, int], view: bool) -> None:
    module = _module()
    layout.fuse(module)
    fused = layout.fused(module.lora_a_stacked, module.lora_b_stacked)
    assert fused is not None
    for slot, rank in ranks.items():
        _set_lora(module, slot, rank, seed=10 * slot, dead=(1,) if slot == 0 else ())
    _set_mapping(wrapper, idx)
    x = _rand(len(idx), HIDDEN, seed=5)
    y0 = _rand(len(idx), sum(SLICES), seed=6)
    y = y0.clone()
    wrapper.add_lora_linear(y, x, module.lora_a_stacked, module.lora_b_stacked, 1.0, SLICES)
    torch.testing.assert_close(y, _reference(y0, x, module, idx))
    present = tuple(sorted({s for s in idx if s >= 0}))
    pack = wrapper._hotswap_lora.pack(module.lora_a_stacked, module.lora_b_stacked, present)
    assert pack is not None and pack.shrink is not None and pack.expand is not None
    shares = (pack.shrink.w.data_ptr() == fused.a[present[0]].data_ptr()
              and pack.expand.w.data_ptr() == fused.b[present[0]].data_ptr())
    assert shares == view


@pytest.mark.parametrize("rank", [MAX_RANK, 3])  # a view; a trimmed copy
def test_a_new_adapter_in_a_written_slot_is_seen(wrapper: Any, rank: int) -> None:
    """After vLLM writes another adapter into the slot, the next step must use the new
    weights: the pack is built again (the views share the buffers' version counter). A
    stale view would still read the new weights, so the copy case and the rebuild itself
    are what can fail here."""
    module = _module()
    layout.fuse(module)
    idx = [1, 1, 1]
    _set_mapping(wrapper, idx)
    x = _rand(3, HIDDEN, seed=7)
    packs = []
    for seed in (20, 30):
        _set_lora(module, 1, rank, seed=seed)
        y = torch.zeros(3, sum(SLICES))
        wrapper.add_lora_linear(y, x, module.lora_a_stacked, module.lora_b_stacked, 1.0, SLICES)
        torch.testing.assert_close(y, _reference(torch.zeros(3, sum(SLICES)), x, module, idx))
        packs.append(wrapper._hotswap_lora.pack(module.lora_a_stacked, module.lora_b_stacked,
                                                (1,)))
    assert packs[0] is not packs[1]
