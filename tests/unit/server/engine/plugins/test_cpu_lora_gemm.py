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


def _onednn_bf16() -> bool:
    """Whether oneDNN has a bf16 matmul on this CPU (AVX2-only CPUs have none)."""
    try:
        ops.create_onednn_mm(_weights(16, 64, seed=0).t(), 32)
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("through", ["call", "add_into"])
def test_a_bf16_pack_makes_its_onednn_primitive_on_the_call_it_is_due(through: str) -> None:
    if not ops._supports_onednn:
        pytest.skip("this vLLM build has no oneDNN matmul")  # the torch path is below
    w = _weights(48, 576, seed=1)
    gemm = packing._Gemm(w)
    due = gemm._calls_left
    assert 2 <= due < packing._ONEDNN_AFTER_CALLS + packing._ONEDNN_SPREAD
    x = _weights(7, 576, seed=2)
    want = x.float() @ w.float().t()
    onednn = _onednn_bf16()
    for call in range(1, due + 3):
        if through == "call":
            got = gemm(x).float()
        else:  # into a column slice of a wider output, as the packs' expands write
            y = torch.ones(7, 60, dtype=torch.bfloat16)
            gemm.add_into(y[:, 5:53], x)
            assert (y[:, :5] == 1).all() and (y[:, 53:] == 1).all()
            got = y[:, 5:53].float() - 1
        torch.testing.assert_close(got, want, rtol=2e-2, atol=5e-2)
        # torch until the call it is due; from it on oneDNN, or torch for good where
        # this CPU has no bf16 kernel
        assert (gemm._handler is not None) == (onednn and call >= due), call


def test_a_failed_primitive_is_tried_once(monkeypatch: pytest.MonkeyPatch) -> None:
    if not ops._supports_onednn:
        pytest.skip("this vLLM build has no oneDNN matmul")
    tries = []

    def refuse(*args: object) -> None:
        tries.append(args)
        raise RuntimeError("could not create a primitive descriptor")

    monkeypatch.setattr(ops, "create_onednn_mm", refuse)
    gemm = packing._Gemm(_weights(16, 32, seed=5))
    x = _weights(3, 32, seed=6)
    for _ in range(packing._ONEDNN_AFTER_CALLS + packing._ONEDNN_SPREAD + 2):
        torch.testing.assert_close(gemm(x).float(), x.float() @ gemm.w.float().t(),
                                   rtol=2e-2, atol=5e-2)
    assert len(tries) == 1 and gemm._handler is None


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
