"""The replacement ``PunicaWrapperCPU`` methods and their per-wrapper state."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from . import layout
from .facts import CACHE, _StackFacts
from .ops import expand, expand_slice, shrink
from .packing import _Gemm, _Pack, _slots_cols, _slots_cols_into, _slots_rows, _StepRows, _version

if TYPE_CHECKING:
    from vllm.lora.layers import LoRAMapping

# The wrapper path does better than grouping: per module call it runs one shrink matmul
# for all slices and adapters present, a 0/1 mask multiply (token x adapter, zero for
# tokens without one), and one expand matmul for all slices. The adapters' A and B are
# packed once (slots present in the step, trimmed to their real rank) and cached until
# the weights change. On CPU the op count matters more than the FLOPs: a bf16 matmul
# costs ~20 us however small, so per-adapter matmuls on a few rows each lose to a few
# wider ones, even if those multiply some zeros.

# Bumped by every patch() (install.py): per-wrapper step rows computed under an earlier
# patch are stale.
_generation = 0

# Packs kept per module (weights) for different sets of present adapters. Steps with
# the same set reuse the pack; a bound keeps memory at a few copies of the LoRA weights.
_PACKS_PER_MODULE = 4


@dataclass(frozen=True)
class _PackEntry:
    first: torch.Tensor  # the module's first stacked tensor: keeps the cache key's id valid
    versions: tuple[int | None, ...]
    pack: _Pack | None


class _WrapperState:
    """Per-step rows and per-weights caches, attached to a PunicaWrapperCPU instance."""

    def __init__(self) -> None:
        self.tokens = self.sampler = _StepRows(torch.empty(0, dtype=torch.long))
        self.generation = -1
        self._packs: dict[tuple[int, int, int], dict[tuple[int, ...], _PackEntry]] = {}

    def refresh(self, wrapper: Any) -> None:
        self.tokens = _StepRows(wrapper.token_lora_indices)
        self.sampler = _StepRows(wrapper.sampler_indices)
        self.generation = _generation

    def facts(self, stacked: torch.Tensor, rank_axis: int) -> _StackFacts:
        return CACHE.get(stacked, rank_axis)

    def live_slots(self, lora_b: torch.Tensor) -> tuple[bool, ...]:
        return self.facts(lora_b, rank_axis=2).live

    def pack(
        self,
        lora_a: Sequence[torch.Tensor],
        lora_b: Sequence[torch.Tensor],
        present: tuple[int, ...],
        max_rank: int | None = None,
    ) -> _Pack | None:
        """Packed weights of the present adapters that touch this module (None: none do).

        Give A and B for shrink+expand, only A for a shrink, only B for an expand.
        """
        # Called for every module in every step: keyed by the identity of the module's
        # first stacked tensor (vLLM keeps them for the model's lifetime; the entry holds
        # a reference, so the id cannot be reused while cached), valid while no stacked
        # tensor of the module has been written since.
        stacks = (*lora_a, *lora_b)
        first = stacks[0]
        versions = tuple(_version(t) for t in stacks)
        per_module = self._packs.setdefault((id(first), len(lora_a), len(lora_b)), {})
        hit = per_module.get(present)
        if hit is not None and hit.first is first and hit.versions == versions:
            return hit.pack
        pack = self._build(lora_a, lora_b, present, max_rank)
        if None not in versions:
            per_module.pop(present, None)
            per_module[present] = _PackEntry(first, versions, pack)
            while len(per_module) > _PACKS_PER_MODULE:
                del per_module[next(iter(per_module))]
        return pack

    def _build(
        self,
        lora_a: Sequence[torch.Tensor],
        lora_b: Sequence[torch.Tensor],
        present: tuple[int, ...],
        max_rank: int | None,
    ) -> _Pack | None:
        facts_a = [self.facts(t, rank_axis=1) for t in lora_a]
        facts_b = [self.facts(t, rank_axis=2) for t in lora_b]
        # A slot matters where its B is non-zero (or, for a shrink alone, its A).
        deciders = facts_b or facts_a
        slots = tuple(s for s in present if any(f.live[s] for f in deciders))
        if not slots:
            return None
        if facts_a and facts_b:
            rank = max(
                min(fa.rank[s], fb.rank[s])
                for fa, fb in zip(facts_a, facts_b, strict=True)
                for s in slots
            )
        else:
            rank = max(f.rank[s] for f in deciders for s in slots)
        if max_rank is not None:
            rank = min(rank, max_rank)
        if rank == 0:
            return None
        view = self._fused_view(lora_a, lora_b, slots, rank)
        if view is not None:
            return view
        # Built on the first step after any adapter write, for every module: a cold
        # adapter's first token waits for ~120 of these, so few ops each. One slot of a
        # one-slice layer at full rank packs as views of vLLM's tensors, like one slot of
        # a fused layer above; the cache drops views once vLLM writes the tensors again.
        a = b = None
        if lora_a:
            rows = [_slots_rows(t, slots, rank) for t in lora_a]
            a = rows[0] if len(rows) == 1 else torch.cat(rows)
        out_sizes = tuple(t.shape[-2] for t in lora_b)
        width = len(slots) * rank
        if len(lora_b) == 1:
            b = _slots_cols(lora_b[0], slots, rank)
        elif lora_b:
            # Block-diagonal: slice i's [out_i, width] block, zeros elsewhere.
            b = lora_b[0].new_zeros(sum(out_sizes), len(lora_b) * width)
            row = 0
            for i, t in enumerate(lora_b):
                block = b[row : row + out_sizes[i], i * width : (i + 1) * width]
                _slots_cols_into(block, t, slots, rank)
                row += out_sizes[i]
        return _Pack(
            slots=slots,
            rank=rank,
            out_sizes=out_sizes,
            shrink=_Gemm(a) if a is not None else None,
            expand=_Gemm(b) if b is not None else None,
        )

    @staticmethod
    def _fused_view(
        lora_a: Sequence[torch.Tensor],
        lora_b: Sequence[torch.Tensor],
        slots: tuple[int, ...],
        rank: int,
    ) -> _Pack | None:
        """One slot of a fused multi-slice layer (``layout.py``): its pack at full rank
        is ``a[slot]`` and ``b[slot]`` as they stand, no copy. Taken while the adapter's
        rank is at least half the max rank: the zero rank rows then cost at most twice the
        FLOPs of a trimmed copy, which at these sizes is less than building one."""
        fused = layout.fused(lora_a, lora_b)
        if fused is None or len(slots) != 1 or 2 * rank < fused.max_rank:
            return None
        slot = slots[0]
        return _Pack(
            slots=slots,
            rank=fused.max_rank,
            out_sizes=tuple(t.shape[-2] for t in lora_b),
            shrink=_Gemm(fused.a[slot]),
            expand=_Gemm(fused.b[slot]),
        )


def _state(wrapper: Any) -> _WrapperState:
    """The wrapper's state for the current step.

    Normally refreshed by the patched ``update_metadata``. If the patch was installed
    after the wrapper's last metadata update (an A/B toggle mid-run: vLLM skips the
    update while the batch mapping is unchanged), the rows are derived again once from
    the indices the stock update left on the wrapper.
    """
    state: _WrapperState | None = getattr(wrapper, "_hotswap_lora", None)
    if state is None:
        state = wrapper._hotswap_lora = _WrapperState()
    if state.generation != _generation:
        state.refresh(wrapper)
    return state


def _addmm(dst: torch.Tensor, lhs: torch.Tensor, rhs: torch.Tensor) -> None:
    """``dst += lhs @ rhs.T`` in place; ``dst`` may be a column slice of the output."""
    if dst.dtype == lhs.dtype:
        dst.addmm_(lhs, rhs.t())
    else:
        dst.add_(lhs @ rhs.t())


def _lora_linear(
    state: _WrapperState,
    rows: _StepRows,
    y: torch.Tensor,
    x: torch.Tensor,
    lora_a: Sequence[torch.Tensor],
    lora_b: Sequence[torch.Tensor],
    scale: float,
    sizes: Sequence[int],
) -> None:
    """``y[:, slice i] += scale * x @ A_i[slot].T @ B_i[slot].T`` for rows with an adapter."""
    pack = state.pack(lora_a, lora_b, rows.present)
    if pack is None or pack.shrink is None or pack.expand is None:
        return
    h = pack.shrink(x)  # [rows, slices * width]
    if scale != 1.0:
        h.mul_(scale)
    n_slices = len(pack.out_sizes)
    if rows.needs_mask(pack.slots):
        mask = rows.mask(pack.slots, pack.rank, h.dtype)
        h.view(h.shape[0], n_slices, pack.width).mul_(mask.unsqueeze(1))
    if tuple(sizes) == pack.out_sizes:
        pack.expand.add_into(y[:, : sum(sizes)], h)
        return
    # Output narrower than the weights (logits: vocab padding): slice by slice.
    offset = 0
    for i, size in enumerate(sizes):
        block = h[:, i * pack.width : (i + 1) * pack.width]
        _addmm(y[:, offset : offset + size], block, pack.b_block(i)[:size])
        offset += size


def _stock_update_metadata(self: Any, *args: Any, **kwargs: Any) -> None:
    from vllm.lora.punica_wrapper.punica_base import PunicaWrapperBase

    # PunicaWrapperCPU inherits update_metadata; it fills the index tensors we read.
    PunicaWrapperBase.update_metadata(self, *args, **kwargs)


def _update_metadata(
    self: Any,
    mapping: LoRAMapping,
    lora_index_to_id: list[int | None],
    max_loras: int,
    vocab_size: int,
    **kwargs: Any,
) -> None:
    _stock_update_metadata(self, mapping, lora_index_to_id, max_loras, vocab_size, **kwargs)
    state: _WrapperState | None = getattr(self, "_hotswap_lora", None)
    if state is None:
        state = self._hotswap_lora = _WrapperState()
    state.refresh(self)


def _add_lora_linear(
    self: Any,
    y: torch.Tensor,
    x: torch.Tensor,
    lora_a_stacked: tuple[torch.Tensor, ...],
    lora_b_stacked: tuple[torch.Tensor, ...],
    scale: float,
    output_slices: tuple[int, ...],
    *,
    buffer: tuple[torch.Tensor, ...] | None = None,
    **kwargs: Any,
) -> None:
    # Shrink and expand fused: the rank-sized intermediate stays in the engine dtype and
    # never goes through the float32 buffer the stock path allocates.
    state = _state(self)
    rows = state.tokens
    if not rows.present:
        return
    y = y.view(-1, y.shape[-1])
    x = x.view(-1, x.shape[-1])
    if not kwargs.get("add_inputs", True):
        # Overwrite semantics (vLLM's GPU dual-stream path): rows without an adapter must
        # stay untouched rather than receive a masked zero, so use the grouped ops.
        offset = 0
        for lora_a, lora_b, size in zip(lora_a_stacked, lora_b_stacked, output_slices, strict=True):
            h = torch.zeros(x.shape[0], lora_a.shape[-2], dtype=lora_a.dtype)
            shrink(h, x, lora_a, rows.groups, scale)
            expand_slice(y, h, lora_b, rows.groups, offset, size, add_inputs=False)
            offset += size
        return
    _lora_linear(state, rows, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices)


def _add_shrink(
    self: Any,
    y: tuple[torch.Tensor, ...] | torch.Tensor,
    x: torch.Tensor,
    lora_a_stacked: tuple[torch.Tensor, ...],
    scale: float,
    **kwargs: Any,
) -> None:
    # Row-parallel layers (o_proj, down_proj) call shrink and expand separately through
    # a float32 buffer [slices, rows, max_rank]: each row gets its own adapter's x @ A.T
    # (zero for rows without one), summed out of the masked packed product.
    state = _state(self)
    rows = state.tokens
    if not rows.present:
        return
    pack = state.pack(lora_a_stacked, (), rows.present)
    if pack is None or pack.shrink is None:
        return
    h = pack.shrink(x.view(-1, x.shape[-1]))
    if scale != 1.0:
        h.mul_(scale)
    n_rows, n_slices, n_slots = h.shape[0], len(lora_a_stacked), len(pack.slots)
    if rows.needs_mask(pack.slots):
        mask = rows.mask(pack.slots, pack.rank, h.dtype)
        h.view(n_rows, n_slices, pack.width).mul_(mask.unsqueeze(1))
    per_row = h.view(n_rows, n_slices, n_slots, pack.rank)
    per_row = per_row.sum(dim=2) if n_slots > 1 else per_row[:, :, 0]
    for slice_idx in range(n_slices):
        out = y[slice_idx]
        out.view(-1, out.shape[-1])[:, : pack.rank].copy_(per_row[:, slice_idx])


def _add_expand(
    self: Any,
    y: torch.Tensor,
    x: tuple[torch.Tensor, ...] | torch.Tensor,
    lora_b_stacked: tuple[torch.Tensor, ...],
    output_slices: tuple[int, ...],
    offset_start: int = 0,
    add_inputs: bool = True,
    **kwargs: Any,
) -> None:
    state = _state(self)
    rows = state.tokens
    if not rows.present:
        return
    y = y.view(-1, y.shape[-1])
    if not add_inputs:  # overwrite semantics: see _add_lora_linear
        offset = offset_start
        for slice_idx, (lora_b, size) in enumerate(zip(lora_b_stacked, output_slices, strict=True)):
            expand_slice(y, x[slice_idx], lora_b, rows.groups, offset, size, add_inputs=False)
            offset += size
        return
    pack = state.pack((), lora_b_stacked, rows.present, max_rank=x[0].shape[-1])
    if pack is None:
        return
    masked = rows.needs_mask(pack.slots)
    offset = offset_start
    for slice_idx, size in enumerate(output_slices):
        b = pack.b_block(slice_idx)
        xs = x[slice_idx]
        xs = xs.view(-1, xs.shape[-1])[:, : pack.rank].to(b.dtype)
        if masked:
            # Spread each row's rank vector into its own adapter's columns.
            onehot = rows.onehot(pack.slots, b.dtype)
            xs = (onehot.unsqueeze(2) * xs.unsqueeze(1)).view(xs.shape[0], pack.width)
        _addmm(y[:, offset : offset + size], xs, b[:size])
        offset += size


def _add_lora_embedding(
    self: Any,
    y: torch.Tensor,
    x: torch.Tensor,
    lora_b_stacked: torch.Tensor,
    add_inputs: bool = True,
    **kwargs: Any,
) -> None:
    # Only for adapters that train the embeddings (rare): grouped ops suffice.
    state = _state(self)
    rows = state.tokens
    if rows.present:
        live = state.live_slots(lora_b_stacked)
        expand(y, x, lora_b_stacked, rows.groups.only(live), add_inputs)


def _add_lora_logits(
    self: Any,
    y: torch.Tensor,
    x: torch.Tensor,
    lora_a_stacked: torch.Tensor,
    lora_b_stacked: torch.Tensor,
    scale: float,
    *,
    buffer: torch.Tensor | None = None,
    **kwargs: Any,
) -> None:
    # Logits exist for sampled positions only, hence the sampler rows. Adapters without
    # lm_head weights leave all-zero B slots, so no pack and no vocab x rank matmul.
    state = _state(self)
    rows = state.sampler
    if not rows.present:
        return
    y = y.view(-1, y.shape[-1])
    x = x.view(-1, x.shape[-1])
    cols = min(lora_b_stacked.shape[-2], y.shape[1])
    _lora_linear(state, rows, y, x, (lora_a_stacked,), (lora_b_stacked,), scale, (cols,))


_METHODS: dict[str, Callable[..., None]] = {
    "update_metadata": _update_metadata,
    "add_shrink": _add_shrink,
    "add_expand": _add_expand,
    "add_lora_embedding": _add_lora_embedding,
    "add_lora_linear": _add_lora_linear,
    "add_lora_logits": _add_lora_logits,
}
