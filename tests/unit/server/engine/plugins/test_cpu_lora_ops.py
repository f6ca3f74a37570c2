"""The CPU LoRA replacement ops against a plain per-token reference (no engine).

Every op is checked on batches that mix several adapter slots with tokens that have no
adapter (index -1), in interleaved and contiguous layouts, since the stock ops' bug
was exactly that -1 picked the last slot.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from hotswap.server.engine.plugins import cpu_lora
from hotswap.server.engine.plugins.cpu_lora import TokenGroups

SLOTS = 4
RANK = 8
HIDDEN = 48
OUT = 40
# A batch layout per case: mixed and interleaved, contiguous runs, one adapter for all,
# nobody with an adapter, one token.
INDEX_CASES: dict[str, list[int]] = {
    "interleaved": [-1, 2, -1, 0, 2, 3, -1, 1, 1, 3, 0, -1],
    "runs": [1, 1, 1, -1, -1, 3, 3, 0, 0, 0, 0, -1],
    "one_adapter": [2] * 7,
    "no_adapter": [-1] * 5,
    "single": [3],
}


def _rand(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _ref_shrink(
    y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, idx: list[int], scale: float
) -> torch.Tensor:
    """Per-token: y[t] = scale * x[t] @ A[slot].T, untouched where slot is -1."""
    out = y.clone()
    for t, slot in enumerate(idx):
        if slot >= 0:
            a = w[slot].reshape(w.shape[-2], w.shape[-1]).double()
            out[t, : a.shape[0]] = (scale * (x[t].double() @ a.t())).to(y.dtype)
    return out


def _ref_expand(
    y: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    idx: list[int],
    offset: int,
    size: int,
    add: bool,
) -> torch.Tensor:
    """Per-token: y[t, offset:offset+size] (+)= x[t] @ B[slot].T, untouched where -1."""
    out = y.clone()
    for t, slot in enumerate(idx):
        if slot >= 0:
            b = w[slot].reshape(w.shape[-2], w.shape[-1])[:size].double()
            delta = x[t].double() @ b.t()
            base = out[t, offset : offset + size].double() if add else 0.0
            out[t, offset : offset + size] = (base + delta).to(y.dtype)
    return out


def _segments(idx: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """sgmv metadata for a token index list: segment starts, lengths, slots."""
    slots, lengths = torch.unique_consecutive(torch.tensor(idx), return_counts=True)
    starts = torch.cumsum(lengths, 0) - lengths
    return starts, lengths, slots


@pytest.mark.parametrize("case", INDEX_CASES)
@pytest.mark.parametrize("stacked_dims", [3, 4])
def test_shrink_ops_match_reference(case: str, stacked_dims: int) -> None:
    idx = INDEX_CASES[case]
    x = _rand(len(idx), HIDDEN, seed=1)
    lora_a = _rand(SLOTS, 1, RANK, HIDDEN, seed=2)
    if stacked_dims == 3:
        lora_a = lora_a.squeeze(1)
    y0 = torch.zeros(len(idx), RANK)
    expected = _ref_shrink(y0, x, lora_a, idx, 0.5)

    y = y0.clone()
    cpu_lora.bgmv_shrink(x, lora_a, y, torch.tensor(idx), 0.5)
    torch.testing.assert_close(y, expected)

    y = y0.clone()
    starts, lengths, slots = _segments(idx)
    cpu_lora.sgmv_shrink(
        x, lora_a, y, starts, lengths, slots, len(slots), int(lengths.max()), len(idx), 0.5
    )
    torch.testing.assert_close(y, expected)


@pytest.mark.parametrize("case", INDEX_CASES)
@pytest.mark.parametrize("add_inputs", [True, False])
def test_expand_ops_match_reference(case: str, add_inputs: bool) -> None:
    idx = INDEX_CASES[case]
    x = _rand(len(idx), RANK, seed=3)
    lora_b = _rand(SLOTS, 1, OUT, RANK, seed=4)
    y0 = _rand(len(idx), OUT, seed=5)
    expected = _ref_expand(y0, x, lora_b, idx, 0, OUT, add_inputs)

    y = y0.clone()
    cpu_lora.bgmv_expand(x, lora_b, y, torch.tensor(idx), add_inputs)
    torch.testing.assert_close(y, expected)

    y = y0.clone()
    starts, lengths, slots = _segments(idx)
    cpu_lora.sgmv_expand(
        x, lora_b, y, starts, lengths, slots, len(slots), int(lengths.max()), len(idx), add_inputs
    )
    torch.testing.assert_close(y, expected)


def test_expand_handles_padding_mismatch() -> None:
    """Stacked B may be padded wider or narrower than the output (vocab padding)."""
    idx = [0, -1, 1]
    x = _rand(3, RANK, seed=6)
    wide_b = _rand(SLOTS, 1, OUT + 8, RANK, seed=7)
    y0 = _rand(3, OUT, seed=8)
    y = y0.clone()
    cpu_lora.bgmv_expand(x, wide_b, y, torch.tensor(idx), True)
    torch.testing.assert_close(y, _ref_expand(y0, x, wide_b, idx, 0, OUT, True))


@pytest.mark.parametrize("case", INDEX_CASES)
@pytest.mark.parametrize("add_inputs", [True, False])
def test_expand_slice_ops_match_reference(case: str, add_inputs: bool) -> None:
    idx = INDEX_CASES[case]
    offset, size = 16, 24
    x = _rand(len(idx), RANK, seed=9)
    lora_b = _rand(SLOTS, 1, size, RANK, seed=10)
    y0 = _rand(len(idx), 64, seed=11)
    expected = _ref_expand(y0, x, lora_b, idx, offset, size, add_inputs)

    y = y0.clone()
    cpu_lora.bgmv_expand_slice(x, lora_b, y, torch.tensor(idx), offset, size, add_inputs)
    torch.testing.assert_close(y, expected)

    y = y0.clone()
    starts, lengths, slots = _segments(idx)
    cpu_lora.sgmv_expand_slice(
        x,
        lora_b,
        y,
        starts,
        lengths,
        slots,
        len(slots),
        int(lengths.max()),
        len(idx),
        offset,
        size,
        add_inputs,
    )
    torch.testing.assert_close(y, expected)


def test_bf16_weights_into_float32_buffer() -> None:
    """Engine-dtype weights with vLLM's float32 shrink buffer: no error, close result."""
    idx = INDEX_CASES["interleaved"]
    x = _rand(len(idx), HIDDEN, seed=12, dtype=torch.bfloat16)
    lora_a = _rand(SLOTS, 1, RANK, HIDDEN, seed=13, dtype=torch.bfloat16)
    y = torch.zeros(len(idx), RANK)
    cpu_lora.bgmv_shrink(x, lora_a, y, torch.tensor(idx), 1.0)
    expected = _ref_shrink(torch.zeros(len(idx), RANK), x.float(), lora_a.float(), idx, 1.0)
    torch.testing.assert_close(y, expected, atol=0.1, rtol=0.02)


def test_token_groups_layouts() -> None:
    groups = dict(TokenGroups.from_indices(torch.tensor([1, 1, -1, 0, 1, 2, 2])))
    assert set(groups) == {0, 1, 2}
    assert groups[0] == slice(3, 4)
    assert groups[2] == slice(5, 7)
    assert isinstance(groups[1], torch.Tensor)
    assert groups[1].tolist() == [0, 1, 4]
    assert not TokenGroups.from_indices(torch.tensor([-1, -1]))
    assert dict(TokenGroups.from_indices(torch.tensor([3, 3, 3]))) == {3: slice(0, 3)}


def test_stock_ops_give_no_adapter_tokens_the_last_slot() -> None:
    """The defect this module exists for, shown on vLLM 0.32's own op."""
    from vllm.lora.ops.torch_ops import bgmv_shrink as stock_bgmv_shrink

    idx = [-1, 0]
    x = _rand(2, HIDDEN, seed=14)
    lora_a = _rand(SLOTS, 1, RANK, HIDDEN, seed=15)
    y = torch.zeros(2, RANK)
    stock_bgmv_shrink(x, lora_a, y, torch.tensor(idx), 1.0)
    torch.testing.assert_close(y[0], x[0] @ lora_a[SLOTS - 1, 0].t())
    fixed = torch.zeros(2, RANK)
    cpu_lora.bgmv_shrink(x, lora_a, fixed, torch.tensor(idx), 1.0)
    assert torch.count_nonzero(fixed[0]) == 0


# --- PunicaWrapperCPU with the patch installed -------------------------------------------

LORA_IDS = [101, 102, 103, 104]  # lora_index_to_id: slot s serves LoRA id LORA_IDS[s]


def _set_mapping(wrapper: Any, token_slots: list[int], request_slots: list[int]) -> None:
    from vllm.lora.layers import LoRAMapping

    def lora_id(slot: int) -> int:
        return LORA_IDS[slot] if slot >= 0 else 0

    mapping = LoRAMapping(
        tuple(lora_id(s) for s in token_slots),
        tuple(lora_id(s) for s in request_slots),
        is_prefill=True,
    )
    wrapper.update_metadata(mapping, list(LORA_IDS), SLOTS + 1, OUT)


def _ref_linear(
    y: torch.Tensor,
    x: torch.Tensor,
    lora_a: tuple[torch.Tensor, ...],
    lora_b: tuple[torch.Tensor, ...],
    idx: list[int],
    slices: tuple[int, ...],
) -> torch.Tensor:
    out = y.clone()
    offset = 0
    for a, b, size in zip(lora_a, lora_b, slices, strict=True):
        h = _ref_shrink(torch.zeros(len(idx), RANK), x, a, idx, 1.0)
        out = _ref_expand(out, h, b, idx, offset, size, True)
        offset += size
    return out


def _qkv_weights(seed: int) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    slices = (24, 8, 8)
    lora_a = tuple(_rand(SLOTS, 1, RANK, HIDDEN, seed=seed + i) for i in range(3))
    lora_b = tuple(_rand(SLOTS, 1, n, RANK, seed=seed + 10 + i) for i, n in enumerate(slices))
    return lora_a, lora_b


@pytest.mark.parametrize("case", ["interleaved", "runs", "one_adapter", "no_adapter"])
def test_wrapper_add_lora_linear(wrapper: Any, case: str) -> None:
    idx = INDEX_CASES[case]
    _set_mapping(wrapper, idx, idx)
    slices = (24, 8, 8)
    lora_a, lora_b = _qkv_weights(seed=20)
    x = _rand(len(idx), HIDDEN, seed=16)
    y0 = _rand(len(idx), sum(slices), seed=17)
    y = y0.clone()
    wrapper.add_lora_linear(y, x, lora_a, lora_b, 1.0, slices)
    torch.testing.assert_close(y, _ref_linear(y0, x, lora_a, lora_b, idx, slices))
    no_adapter_rows = [t for t, slot in enumerate(idx) if slot < 0]
    assert torch.equal(y[no_adapter_rows], y0[no_adapter_rows])


def test_wrapper_shrink_then_expand_like_row_parallel(wrapper: Any) -> None:
    """o_proj/down_proj path: add_shrink into a float32 buffer, then add_expand."""
    idx = INDEX_CASES["interleaved"]
    _set_mapping(wrapper, idx, idx)
    lora_a = (_rand(SLOTS, 1, RANK, HIDDEN, seed=30),)
    lora_b = (_rand(SLOTS, 1, OUT, RANK, seed=31),)
    x = _rand(len(idx), HIDDEN, seed=32)
    y0 = _rand(len(idx), OUT, seed=33)
    buffer = torch.zeros(1, len(idx), RANK)
    wrapper.add_shrink(buffer, x, lora_a, 1.0)
    y = y0.clone()
    wrapper.add_expand(y, buffer, lora_b, (OUT,), offset_start=0, add_input=True)
    torch.testing.assert_close(y, _ref_linear(y0, x, lora_a, lora_b, idx, (OUT,)))


def test_wrapper_logits_use_request_mapping(wrapper: Any) -> None:
    """Logits rows are requests (sampled positions), not prompt tokens."""
    token_slots = [0, 0, 0, -1, -1, 2, 2]
    request_slots = [0, -1, 2]
    _set_mapping(wrapper, token_slots, request_slots)
    lora_a = _rand(SLOTS, 1, RANK, HIDDEN, seed=40)
    lora_b = _rand(SLOTS, 1, OUT, RANK, seed=41)
    x = _rand(3, HIDDEN, seed=42)
    y0 = _rand(3, OUT, seed=43)
    y = y0.clone()
    wrapper.add_lora_logits(y, x, lora_a, lora_b, 0.5)
    h = _ref_shrink(torch.zeros(3, RANK), x, lora_a, request_slots, 0.5)
    torch.testing.assert_close(y, _ref_expand(y0, h, lora_b, request_slots, 0, OUT, True))
    assert torch.equal(y[1], y0[1])


def test_wrapper_embedding(wrapper: Any) -> None:
    idx = INDEX_CASES["interleaved"]
    _set_mapping(wrapper, idx, idx)
    lora_b = _rand(SLOTS, 1, OUT, RANK, seed=50)
    x = _rand(len(idx), RANK, seed=51)
    y0 = _rand(len(idx), OUT, seed=52)
    y = y0.clone()
    wrapper.add_lora_embedding(y, x, lora_b, add_inputs=True)
    torch.testing.assert_close(y, _ref_expand(y0, x, lora_b, idx, 0, OUT, True))


def test_zero_slots_skipped_until_written(wrapper: Any) -> None:
    """A slot with all-zero B (module not targeted) is skipped, and the cached fact is
    dropped as soon as the slot is written in place, as set_lora does."""
    idx = INDEX_CASES["runs"]
    _set_mapping(wrapper, idx, idx)
    lora_a = _rand(SLOTS, 1, RANK, HIDDEN, seed=60)
    lora_b = torch.zeros(SLOTS, 1, OUT, RANK)
    x = _rand(len(idx), HIDDEN, seed=61)
    y0 = _rand(len(idx), OUT, seed=62)
    y = y0.clone()
    wrapper.add_lora_logits(y, x, lora_a, lora_b, 1.0)
    assert torch.equal(y, y0)

    new_b = _rand(OUT, RANK, seed=63)
    lora_b[1, 0, :, :].copy_(new_b)  # what LogitsProcessorWithLoRA.set_lora does
    y = y0.clone()
    wrapper.add_lora_logits(y, x, lora_a, lora_b, 1.0)
    h = _ref_shrink(torch.zeros(len(idx), RANK), x, lora_a, idx, 1.0)
    torch.testing.assert_close(y, _ref_expand(y0, h, lora_b, idx, 0, OUT, True))
    assert not torch.equal(y, y0)

    lora_b[1] = 0  # reset_lora
    y = y0.clone()
    wrapper.add_lora_logits(y, x, lora_a, lora_b, 1.0)
    assert torch.equal(y, y0)


def test_groups_follow_a_repatch(wrapper: Any) -> None:
    """Metadata updated while unpatched (A/B toggle) is picked up after re-patching."""
    idx_before, idx_after = [0, 0, 0], [-1, 3, -1]
    _set_mapping(wrapper, idx_before, idx_before)
    cpu_lora.unpatch()
    _set_mapping(wrapper, idx_after, idx_after)  # stock update_metadata
    cpu_lora.patch()
    lora_a = (_rand(SLOTS, 1, RANK, HIDDEN, seed=70),)
    lora_b = (_rand(SLOTS, 1, OUT, RANK, seed=71),)
    x = _rand(3, HIDDEN, seed=72)
    y0 = _rand(3, OUT, seed=73)
    y = y0.clone()
    wrapper.add_lora_linear(y, x, lora_a, lora_b, 1.0, (OUT,))
    torch.testing.assert_close(y, _ref_linear(y0, x, lora_a, lora_b, idx_after, (OUT,)))


def _vllm_like_stacks(
    seed: int, slices: tuple[int, ...], ranks: list[int], dead: set[tuple[int, int]]
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Stacked weights as vLLM fills them: slot s holds a rank-ranks[s] adapter zero-padded
    to RANK; (slot, slice) pairs in ``dead`` are modules the adapter does not target."""
    lora_a, lora_b = [], []
    for i, size in enumerate(slices):
        a = torch.zeros(SLOTS, 1, RANK, HIDDEN)
        b = torch.zeros(SLOTS, 1, size, RANK)
        for slot, rank in enumerate(ranks):
            if rank and (slot, i) not in dead:
                a[slot, 0, :rank] = _rand(rank, HIDDEN, seed=seed + 100 * i + slot)
                b[slot, 0, :, :rank] = _rand(size, rank, seed=seed + 100 * i + slot + 50)
        lora_a.append(a)
        lora_b.append(b)
    return tuple(lora_a), tuple(lora_b)


PACKED_CASES: dict[str, tuple[list[int], list[int], set[tuple[int, int]]]] = {
    # token slots, true rank per slot, dead (slot, slice) pairs
    "mixed_ranks": ([-1, 0, 1, 2, 3, 0, -1, 3], [8, 2, 5, 1], set()),
    "dead_slices": ([1, 1, 0, 2, -1, 2, 0, 1], [4, 8, 3, 6], {(1, 0), (2, 1), (2, 2)}),
    "dead_slot_only": ([2, 2, -1, 2], [4, 8, 3, 6], {(2, 0), (2, 1), (2, 2)}),
    "one_slot_covered": ([3, 3, 3, 3, 3], [4, 8, 3, 6], set()),
    # Every row has an adapter but not the same one: still masked per row.
    "two_slots_covered": ([0, 1, 1, 0, 1], [4, 8, 3, 6], set()),
    "all_slots_covered": ([3, 0, 2, 1, 1, 3], [8, 2, 5, 1], {(2, 1)}),
    "empty_slot_used": ([0, 1, -1], [0, 8, 3, 6], set()),
}


@pytest.mark.parametrize("case", PACKED_CASES)
def test_packed_linear_with_padded_ranks_and_untargeted_modules(wrapper: Any, case: str) -> None:
    idx, ranks, dead = PACKED_CASES[case]
    _set_mapping(wrapper, idx, idx)
    slices = (24, 8, 8)
    lora_a, lora_b = _vllm_like_stacks(80, slices, ranks, dead)
    x = _rand(len(idx), HIDDEN, seed=81)
    y0 = _rand(len(idx), sum(slices), seed=82)
    y = y0.clone()
    wrapper.add_lora_linear(y, x, lora_a, lora_b, 0.5, slices)
    expected = y0.clone()
    offset = 0
    for a, b, size in zip(lora_a, lora_b, slices, strict=True):
        h = _ref_shrink(torch.zeros(len(idx), RANK), x, a, idx, 0.5)
        expected = _ref_expand(expected, h, b, idx, offset, size, True)
        offset += size
    torch.testing.assert_close(y, expected)

    # The split path of row-parallel layers on the same weights (one slice).
    buffer = torch.zeros(1, len(idx), RANK)
    wrapper.add_shrink(buffer, x, lora_a[:1], 0.5)
    torch.testing.assert_close(
        buffer[0], _ref_shrink(torch.zeros(len(idx), RANK), x, lora_a[0], idx, 0.5)
    )
    y = y0[:, :24].clone()
    wrapper.add_expand(y, buffer, lora_b[:1], (24,), offset_start=0, add_input=True)
    torch.testing.assert_close(y, _ref_expand(y0[:, :24], buffer[0], lora_b[0], idx, 0, 24, True))


def test_packs_follow_weight_updates_and_batch_changes(wrapper: Any) -> None:
    """Packed weights are cached per module and set of adapters present; a new batch
    composition or a slot written in place (a new adapter loaded) must be honoured."""
    slices = (OUT,)
    lora_a, lora_b = _vllm_like_stacks(90, slices, [4, 4, 4, 4], set())
    x = _rand(6, HIDDEN, seed=91)
    y0 = _rand(6, OUT, seed=92)
    for idx in ([0, 0, 1, 1, -1, 0], [2, 2, 2, 2, 2, 2], [0, 0, 1, 1, -1, 0]):
        _set_mapping(wrapper, idx, idx)
        for step in range(2):
            if step == 1:  # load another adapter into slot 1, as set_lora does
                lora_a[0][1, 0, :6].copy_(_rand(6, HIDDEN, seed=93 + len(idx)))
                lora_b[0][1, 0, :, :6].copy_(_rand(OUT, 6, seed=94))
            y = y0.clone()
            wrapper.add_lora_linear(y, x, lora_a, lora_b, 1.0, slices)
            torch.testing.assert_close(y, _ref_linear(y0, x, lora_a, lora_b, idx, slices))


def test_packed_bf16_like_the_engine(wrapper: Any) -> None:
    idx = [1, -1, 0, 3, 3, 2, -1, 1]
    _set_mapping(wrapper, idx, idx)
    slices = (24, 8, 8)
    lora_a, lora_b = _vllm_like_stacks(100, slices, [8, 2, 5, 3], {(3, 1)})
    x = _rand(len(idx), HIDDEN, seed=101)
    y0 = _rand(len(idx), sum(slices), seed=102)
    expected = _ref_linear(y0, x, lora_a, lora_b, idx, slices)
    bf16 = torch.bfloat16
    y = y0.to(bf16)
    wrapper.add_lora_linear(
        y,
        x.to(bf16),
        tuple(a.to(bf16) for a in lora_a),
        tuple(b.to(bf16) for b in lora_b),
        1.0,
        slices,
    )
    assert y.dtype == bf16
    torch.testing.assert_close(y.float(), expected, atol=0.5, rtol=0.05)


def test_overwrite_semantics_leave_rows_without_adapter(wrapper: Any) -> None:
    """add_inputs=False (vLLM's dual-stream path): adapter rows set, others untouched."""
    idx = [0, -1, 2, -1]
    _set_mapping(wrapper, idx, idx)
    lora_a, lora_b = _vllm_like_stacks(110, (OUT,), [4, 4, 4, 4], set())
    x = _rand(len(idx), HIDDEN, seed=111)
    y0 = _rand(len(idx), OUT, seed=112)
    y = y0.clone()
    wrapper.add_lora_linear(y, x, lora_a, lora_b, 1.0, (OUT,), add_inputs=False)
    delta = _ref_linear(torch.zeros_like(y0), x, lora_a, lora_b, idx, (OUT,))
    torch.testing.assert_close(y[[0, 2]], delta[[0, 2]])
    assert torch.equal(y[[1, 3]], y0[[1, 3]])


# --- register() -----------------------------------------------------------------------------


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Messages of the plugin's logger (vLLM's "vllm" logger does not propagate to root)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect(level=logging.DEBUG)
    cpu_lora.logger.addHandler(handler)
    old_level = cpu_lora.logger.level
    cpu_lora.logger.setLevel(logging.INFO)
    yield lines
    cpu_lora.logger.removeHandler(handler)
    cpu_lora.logger.setLevel(old_level)


@pytest.fixture
def unpatched() -> Iterator[None]:
    was_patched = cpu_lora.is_patched()
    cpu_lora.unpatch()
    yield
    cpu_lora.unpatch()
    if was_patched:
        cpu_lora.patch()


def test_register_patches_once_on_supported_cpu(unpatched: None, log_lines: list[str]) -> None:
    from vllm.lora.punica_wrapper import punica_cpu

    cpu_lora.register()
    cpu_lora.register()
    assert cpu_lora.is_patched()
    assert punica_cpu.bgmv_shrink is cpu_lora.bgmv_shrink
    assert punica_cpu.sgmv_expand_slice is cpu_lora.sgmv_expand_slice
    assert len([line for line in log_lines if "patched" in line]) == 1


def test_register_refuses_other_vllm_versions(
    unpatched: None, monkeypatch: pytest.MonkeyPatch, log_lines: list[str]
) -> None:
    import vllm

    monkeypatch.setattr(vllm, "__version__", "0.33.0")
    cpu_lora.register()
    assert not cpu_lora.is_patched()
    assert len(log_lines) == 1
    assert "0.33.0" in log_lines[0]


def test_register_does_nothing_off_cpu(
    unpatched: None, monkeypatch: pytest.MonkeyPatch, log_lines: list[str]
) -> None:
    from vllm.platforms import current_platform

    monkeypatch.setattr(type(current_platform), "is_cpu", lambda self: False)
    cpu_lora.register()
    assert not cpu_lora.is_patched()
    assert len(log_lines) == 1


def test_unpatch_restores_stock() -> None:
    from vllm.lora import model_manager, worker_manager
    from vllm.lora.ops import torch_ops
    from vllm.lora.punica_wrapper import punica_cpu
    from vllm.lora.punica_wrapper.punica_base import PunicaWrapperBase

    was_patched = cpu_lora.is_patched()
    cpu_lora.patch()
    # Every LoRA manager vLLM creates gets its slots learnt at once (activation.prime).
    assert worker_manager.create_lora_manager is not model_manager.create_lora_manager  # type: ignore[attr-defined]
    cpu_lora.unpatch()
    try:
        assert worker_manager.create_lora_manager is model_manager.create_lora_manager  # type: ignore[attr-defined]
        assert punica_cpu.bgmv_shrink is torch_ops.bgmv_shrink
        assert punica_cpu.PunicaWrapperCPU.update_metadata is PunicaWrapperBase.update_metadata
        assert "add_lora_linear" in punica_cpu.PunicaWrapperCPU.__dict__
    finally:
        if was_patched:
            cpu_lora.patch()


@pytest.mark.parametrize("y_width", [OUT + 8, OUT - 8])
def test_wrapper_logits_with_padded_or_narrow_output(wrapper: Any, y_width: int) -> None:
    """Logits may be padded wider than the LoRA vocab (extra columns stay untouched)."""
    idx = [2, -1, 0]
    _set_mapping(wrapper, idx, idx)
    lora_a = _rand(SLOTS, 1, RANK, HIDDEN, seed=120)
    lora_b = _rand(SLOTS, 1, OUT, RANK, seed=121)
    x = _rand(3, HIDDEN, seed=122)
    y0 = _rand(3, y_width, seed=123)
    y = y0.clone()
    wrapper.add_lora_logits(y, x, lora_a, lora_b, 1.0)
    cols = min(OUT, y_width)
    h = _ref_shrink(torch.zeros(3, RANK), x, lora_a, idx, 1.0)
    expected = y0.clone()
    expected[:, :cols] = _ref_expand(y0[:, :cols], h, lora_b[:, :, :cols], idx, 0, cols, True)
    torch.testing.assert_close(y, expected)
