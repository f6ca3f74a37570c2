"""What the slots of each stacked LoRA tensor hold, kept slot by slot across adapter loads.

The packed matmuls need, per slot, whether it has weights for a module and their real
rank (vLLM zero-pads every adapter to ``max_lora_rank``). Scanning a whole stacked
tensor for that after every write made the first step with a newly loaded adapter pay
for every slot of every module: ~150 ms on the bundled model, 50 of them for the
lm_head's ``[slots, vocab, rank]`` B that no adapter of ours even targets. vLLM writes
one slot per adapter activation, so :meth:`FactsCache.written` (called by
``activation.py`` right after vLLM's ``activate_adapter``) sets that slot alone, to what
the activation knows of it: empty where the adapter has no weights for the module (vLLM
zeroed it), live with the adapter's rank where it copied weights of a known shape, to be
scanned on first use otherwise. Any other write to a tensor is caught by its version
counter and the whole tensor is scanned again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from .packing import _version

Slot = tuple[bool, int]  # (has weights, real rank)
EMPTY: Slot = (False, 0)


@dataclass(frozen=True)
class _StackFacts:
    """What the slots of one stacked LoRA tensor hold, for one version of it."""

    #: The slot has a non-zero weight (a zero B means the adapter skips this module).
    live: tuple[bool, ...]
    #: 1 + the last non-zero index along the rank axis; 0 for a dead slot.
    rank: tuple[int, ...]

    @classmethod
    def of(cls, stacked: torch.Tensor, rank_axis: int) -> _StackFacts:
        return cls.of_slots(_scan_all(stacked, rank_axis))

    @classmethod
    def of_slots(cls, slots: Sequence[Slot]) -> _StackFacts:
        return cls(live=tuple(s[0] for s in slots), rank=tuple(s[1] for s in slots))


def _used(w: torch.Tensor, rank_axis: int) -> torch.Tensor:
    """``[..., rank]``: whether each rank position of ``w [..., rows, cols]`` is non-zero."""
    return w.ne(0).any(dim=-1 if rank_axis == 1 else -2)


def _rank(used: list[bool]) -> int:
    for i in range(len(used) - 1, -1, -1):
        if used[i]:
            return i + 1
    return 0


def _scan_all(stacked: torch.Tensor, rank_axis: int) -> list[Slot]:
    w = stacked.view(stacked.shape[0], stacked.shape[-2], stacked.shape[-1])
    ranks = [_rank(u) for u in _used(w, rank_axis).tolist()]
    return [(r > 0, r) for r in ranks]


def _scan(stacked: torch.Tensor, rank_axis: int, slot: int) -> Slot:
    w = stacked[slot].view(stacked.shape[-2], stacked.shape[-1])
    r = _rank(_used(w, rank_axis).tolist())
    return (r > 0, r)


@dataclass
class _Known:
    tensor: torch.Tensor  # keeps the key's id valid while the entry lives
    version: int
    slots: list[Slot | None]  # None: written since, scanned on first use
    facts: _StackFacts | None


class FactsCache:
    """Slot facts per stacked tensor (rank axis 1 for A ``[slots, 1, rank, in]``, 2 for
    B ``[slots, 1, out, rank]``), valid for one version of the tensor."""

    def __init__(self) -> None:
        self._known: dict[tuple[int, int], _Known] = {}

    def get(self, stacked: torch.Tensor, rank_axis: int) -> _StackFacts:
        version = _version(stacked)
        if version is None:  # inference-mode tensor: no way to tell it was written
            return _StackFacts.of(stacked, rank_axis)
        key = (id(stacked), rank_axis)
        known = self._known.get(key)
        if known is None or known.tensor is not stacked or known.version != version:
            slots: list[Slot] = _scan_all(stacked, rank_axis)
            facts = _StackFacts.of_slots(slots)
            self._known[key] = _Known(stacked, version, list(slots), facts)
            return facts
        if known.facts is None:
            filled = [s if s is not None else _scan(stacked, rank_axis, i)
                      for i, s in enumerate(known.slots)]
            known.slots = list(filled)  # list[Slot] is not a list[Slot | None] to mypy
            known.facts = _StackFacts.of_slots(filled)
        return known.facts

    def versions(self, stacks: Iterable[tuple[torch.Tensor, int]]) -> list[int | None]:
        """The versions of ``stacks`` now: taken before a write, for :meth:`written`."""
        return [_version(t) for t, _ in stacks]

    def known_versions(self, stacks: Iterable[tuple[torch.Tensor, int]]) -> list[int | None]:
        """:meth:`versions`, with every tensor's slots known at that version first (a full
        scan only for one never seen or written behind the cache's back). Cheaper than
        :meth:`get` on each: the facts of a tensor about to be written are not built."""
        out = []
        for tensor, axis in stacks:
            version = _version(tensor)
            known = self._known.get((id(tensor), axis))
            if version is not None and (known is None or known.tensor is not tensor
                                        or known.version != version):
                self.get(tensor, axis)
            out.append(version)
        return out

    def written(
        self,
        stacks: Sequence[tuple[torch.Tensor, int]],
        before: Sequence[int | None],
        slot: int,
        written: Sequence[Slot | None],
    ) -> None:
        """Only ``slot`` of each tensor was written since ``before`` (its versions then);
        ``written[i]``: what tensor i's slot holds now, None if unknown (scanned on first
        use). A live slot's rank may be larger than its last non-zero rank position (the
        packs then multiply some zeros), never smaller. A tensor written elsewhere too is
        scanned again on first use, as is one whose earlier state was not known."""
        for (tensor, axis), old, now in zip(stacks, before, written, strict=True):
            key = (id(tensor), axis)
            known = self._known.get(key)
            version = _version(tensor)
            if (known is None or known.tensor is not tensor or old is None
                    or known.version != old or version is None):
                self._known.pop(key, None)
                continue
            known.slots[slot] = now
            known.version = version
            known.facts = None


#: One per process: a model's wrappers (language model, vision towers) share it, and
#: entries hold the model's stacked tensors, which live as long as the model does.
CACHE = FactsCache()
