"""Shared fixtures of the CPU LoRA plugin tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hotswap.server.engine.plugins import cpu_lora


@pytest.fixture
def wrapper() -> Iterator[Any]:
    """A patched PunicaWrapperCPU; the stock class is restored afterwards."""
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    was_patched = cpu_lora.is_patched()
    cpu_lora.patch()
    yield PunicaWrapperCPU(max_num_batched_tokens=64, max_batches=64, device="cpu")
    if not was_patched:
        cpu_lora.unpatch()
