"""Grouped shrink/expand, and drop-in replacements for the six torch ops of ``punica_cpu``."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .groups import TokenGroups, _slot, _store, _take

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


_OPS: dict[str, Callable[..., None]] = {
    "bgmv_shrink": bgmv_shrink,
    "bgmv_expand": bgmv_expand,
    "bgmv_expand_slice": bgmv_expand_slice,
    "sgmv_shrink": sgmv_shrink,
    "sgmv_expand": sgmv_expand,
    "sgmv_expand_slice": sgmv_expand_slice,
}
