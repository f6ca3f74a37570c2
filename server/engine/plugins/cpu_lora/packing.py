"""Packed LoRA weights and their matmuls, per-step rows."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch

from .groups import TokenGroups


def _version(tensor: torch.Tensor) -> int | None:
    """The tensor's version counter; None for tensors that track none (inference mode)."""
    try:
        return int(tensor._version)
    except RuntimeError:
        return None


#: A pack's oneDNN primitive is made on one of its first uses, not when the pack is
#: built. Making one costs 0.2-8 ms (measured per weight, not explained), ~100 ms for
#: the ~240 matmuls (~120 packs) of the step right after an adapter load: that step
#: would hold a cold adapter's first token. Until then a pack multiplies through torch
#: (~10 us slower per call), and the creations of packs built together spread over
#: several steps. _ONEDNN_AFTER_CALLS: the first call that may make it.
_ONEDNN_AFTER_CALLS = 2
_ONEDNN_SPREAD = 8
_serial = itertools.count()


class _Gemm:
    """``x @ w.T`` for one packed weight ``w [out, in]``.

    For bf16 it goes through the oneDNN matmul vLLM's CPU build uses for its own linear
    layers, with the primitive created once per pack, after its first uses
    (``_ONEDNN_AFTER_CALLS``): at LoRA sizes that halves the cost of a torch bf16 matmul
    (~10 vs ~20 us), which is mostly per-call setup. Otherwise (float32, a build without
    oneDNN, or a CPU oneDNN has no bf16 matmul for, e.g. without AVX-512) a plain torch
    matmul, as vLLM's own linear layers fall back.
    """

    def __init__(self, w: torch.Tensor) -> None:
        self.w = w
        self._handler: Any = None
        #: Calls left before the oneDNN primitive is made; -1: never (no oneDNN here).
        self._calls_left = -1
        if w.dtype == torch.bfloat16:
            from vllm import _custom_ops as ops

            if ops._supports_onednn:
                self._calls_left = _ONEDNN_AFTER_CALLS + next(_serial) % _ONEDNN_SPREAD

    def _onednn(self) -> Any:
        """The oneDNN handle, made on the call it is due (None before, or if none)."""
        if self._calls_left > 0:
            self._calls_left -= 1
            if self._calls_left == 0:
                from vllm import _custom_ops as ops

                try:
                    self._handler = ops.create_onednn_mm(self.w.t(), 32)
                except RuntimeError:
                    # "could not create a primitive descriptor": no bf16 kernel here.
                    self._handler = None
        return self._handler

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._mm(self._onednn(), x)

    def add_into(self, y: torch.Tensor, x: torch.Tensor) -> None:
        """``y += x @ w.T`` in place; ``y`` may be a column slice of a wider output."""
        handler = self._onednn()
        if handler is None and y.dtype == x.dtype == self.w.dtype:
            y.addmm_(x, self.w.t())
        else:
            y.add_(self._mm(handler, x))

    def _mm(self, handler: Any, x: torch.Tensor) -> torch.Tensor:
        if handler is None or x.dtype != self.w.dtype:
            return x.to(self.w.dtype) @ self.w.t()
        from vllm import _custom_ops as ops

        out: torch.Tensor = ops.onednn_mm(handler, x.contiguous(), None)
        return out


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


def _stack3(stacked: torch.Tensor) -> torch.Tensor:
    """Stacked weights ``[slots, (1,) rows, cols]`` as ``[slots, rows, cols]`` (a view)."""
    return stacked.view(stacked.shape[0], stacked.shape[-2], stacked.shape[-1])


def _pick(w: torch.Tensor, slots: tuple[int, ...]) -> torch.Tensor:
    """``w``'s slots in order: a view when they are consecutive, else one gather."""
    if slots == tuple(range(slots[0], slots[0] + len(slots))):
        return w[slots[0] : slots[0] + len(slots)]
    return w[list(slots)]


def _slots_rows(stacked: torch.Tensor, slots: tuple[int, ...], rank: int) -> torch.Tensor:
    """The slots' A as ``[len(slots) * rank, in]``, rows ordered (slot, rank), from stacked
    A ``[slots, (1,) max_rank, in]``: a view of it where that is contiguous (one slot, or
    consecutive slots at full rank), else one copy."""
    w = _stack3(stacked)
    return _pick(w, slots)[:, :rank].reshape(-1, w.shape[-1])


def _cols(stacked: torch.Tensor, slots: tuple[int, ...], rank: int) -> torch.Tensor:
    """The slots' B trimmed to ``rank``: ``[len(slots), out, rank]`` (a view or a gather)."""
    return _pick(_stack3(stacked), slots)[:, :, :rank]


def _slots_cols(stacked: torch.Tensor, slots: tuple[int, ...], rank: int) -> torch.Tensor:
    """The slots' B as ``[out, len(slots) * rank]``, columns ordered (slot, rank), from
    stacked B ``[slots, (1,) out, max_rank]``: a view of it for one slot at full rank,
    else a dense copy (not a strided view: the oneDNN matmul handle is made for the
    matrix as given, and packs were always dense before)."""
    picked = _cols(stacked, slots, rank)
    if len(slots) == 1 and picked.is_contiguous():
        return picked[0]
    return picked.permute(1, 0, 2).reshape(picked.shape[1], -1).contiguous()


def _slots_cols_into(block: torch.Tensor, stacked: torch.Tensor, slots: tuple[int, ...],
                     rank: int) -> None:
    """``block [out, len(slots) * rank] = _slots_cols(...)`` in one copy; ``block`` may
    be a column slice of a wider matrix."""
    block.view(block.shape[0], len(slots), rank).copy_(_cols(stacked, slots, rank).permute(1, 0, 2))


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
        """False only when every row uses the one slot given: the mask would be all ones.

        With two or more slots every row must be masked to its own adapter's columns,
        even when no row is without an adapter: unmasked, each row would get the sum of
        all the packed adapters.
        """
        return not (self.covered and len(slots) == 1 and slots == self.present)

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
