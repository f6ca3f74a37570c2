"""A pack's matmul (plugins/cpu_lora/packing.py ``_Gemm``): bf16 packs move from torch to
vLLM's oneDNN matmul after their first uses, not when built (making the primitive is
what held a cold adapter's first step), and give the same numbers either way."""

from __future__ import annotations

import pytest
import torch
from hotswap.server.engine.plugins.cpu_lora import packing
from vllm import _custom_ops as ops


def _weights(out: int, inp: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(out, inp, generator=g) * 0.1).to(torch.bfloat16)


def test_a_bf16_pack_makes_its_onednn_primitive_after_its_first_use() -> None:
    if not ops._supports_onednn:
        pytest.skip("this vLLM build has no oneDNN matmul")  # the torch path is below
    w = _weights(48, 576, seed=1)
    gemm = packing._Gemm(w)
    x = _weights(7, 576, seed=2)
    want = x.float() @ w.float().t()
    calls = 0
    while gemm._calls_left > 0:
        assert gemm._handler is None  # torch until it is due
        got = gemm(x)
        calls += 1
        torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)
    assert 1 < calls <= packing._ONEDNN_AFTER_CALLS + packing._ONEDNN_SPREAD
    probe = packing._Gemm(_weights(16, 576, seed=3))
    try:
        ops.create_onednn_mm(probe.w.t(), 32)
    except RuntimeError:
        assert gemm._handler is None  # no bf16 kernel on this CPU: torch for good
    else:
        assert gemm._handler is not None
    torch.testing.assert_close(gemm(x).float(), want, rtol=2e-2, atol=2e-2)
    y = torch.ones(7, 48, dtype=torch.bfloat16)
    gemm.add_into(y, x)
    torch.testing.assert_close(y.float(), want + 1, rtol=2e-2, atol=2e-2)


def test_packs_built_together_make_their_primitives_on_different_steps() -> None:
    if not ops._supports_onednn:
        pytest.skip("this vLLM build has no oneDNN matmul")
    due = {packing._Gemm(_weights(16, 64, seed=i))._calls_left for i in range(32)}
    assert len(due) == packing._ONEDNN_SPREAD
    assert min(due) >= 2  # never on the first use: that is the cold step


def test_float32_packs_stay_on_torch_and_add_in_place() -> None:
    w = _weights(24, 40, seed=4).float()
    gemm = packing._Gemm(w)
    assert gemm._calls_left == -1
    x = torch.randn(5, 40)
    y = torch.zeros(5, 30)
    for _ in range(12):
        y[:, 3:27].zero_()
        gemm.add_into(y[:, 3:27], x)  # a column slice of a wider output, as packs use
    assert gemm._handler is None
    torch.testing.assert_close(y[:, 3:27], x @ w.t())
    assert y[:, :3].abs().sum() == 0 and y[:, 27:].abs().sum() == 0
