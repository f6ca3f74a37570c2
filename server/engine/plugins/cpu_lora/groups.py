"""A batch's rows grouped by adapter slot, and the row helpers the grouped ops use."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

#: Rows of one adapter's tokens: a contiguous range (a view, no copy) or row indices.
Rows = slice | torch.Tensor


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
