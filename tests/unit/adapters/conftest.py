"""Fixtures for the adapter registry tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from adapter_fixtures import TINY_LLAMA_CONFIG, MakeLora, lora_writer
from hotswap.adapters.admission import AdmissionLimits, BaseModelSpec
from hotswap.adapters.store import Store


@pytest.fixture
def spec() -> BaseModelSpec:
    return BaseModelSpec.from_config(TINY_LLAMA_CONFIG, "HuggingFaceTB/tiny-llama-test")


@pytest.fixture
def limits() -> AdmissionLimits:
    return AdmissionLimits(max_lora_rank=8, max_total_bytes=1 << 20, max_files=16)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


@pytest.fixture
def make_lora(spec: BaseModelSpec) -> MakeLora:
    """``make_lora(path, rank=, modules=, layers=, dtype=, config=, edit=) -> path``"""
    return lora_writer(spec)


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """An empty staging dir where the store would make one (``store/tmp/``)."""
    d = tmp_path / "store" / "tmp" / "stage"
    d.mkdir(parents=True)
    return d
