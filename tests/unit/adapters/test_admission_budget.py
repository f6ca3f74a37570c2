"""The byte cap fitted to the base model's shapes: the largest adapter that could pass,
not the configured 1 GiB."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from adapter_fixtures import SMOLLM2_CONFIG, MakeLora, tar_of_dir
from hotswap.adapters import errors
from hotswap.adapters.admission import (
    AdmissionLimits,
    BaseModelSpec,
    admit,
    fitted_limits,
    max_adapter_bytes,
)
from hotswap.adapters.sources.upload import extract_archive
from hotswap.adapters.store import Store

SMOLLM2 = BaseModelSpec.from_config(SMOLLM2_CONFIG, "HuggingFaceTB/SmolLM2-135M-Instruct")
# config, task defaults (64 KiB), model card, safetensors header and archive framing
SMALL_FILES = (3 << 20) + (64 << 10)


def test_smollm2_at_rank_16_is_tens_of_megabytes() -> None:
    limits = AdmissionLimits(max_lora_rank=16)
    # q, k, v, o, gate, up, down: rank x (in + out) each, 30 layers, 8 bytes (F64).
    per_layer = (576 + 576) * 2 + (576 + 192) * 2 + (576 + 1536) * 3
    assert max_adapter_bytes(SMOLLM2, limits) == 30 * 16 * per_layer * 8 + SMALL_FILES
    fitted = fitted_limits(limits, SMOLLM2)
    assert 10_000_000 < fitted.max_total_bytes < 50_000_000
    assert fitted.max_lora_rank == 16 and fitted.max_files == limits.max_files


def test_configured_cap_is_never_raised() -> None:
    small = AdmissionLimits(max_lora_rank=16, max_total_bytes=5 << 20)
    assert fitted_limits(small, SMOLLM2) == small


def test_prompt_learning_bounds_follow_their_width() -> None:
    limits = AdmissionLimits(max_virtual_tokens=100, peft_types=frozenset({"PREFIX_TUNING"}))
    prefix_width = 30 * 2 * 3 * 64  # layers * (key, value) * kv heads * head_dim
    assert max_adapter_bytes(SMOLLM2, limits) == 100 * prefix_width * 8 + SMALL_FILES
    both = AdmissionLimits(max_virtual_tokens=100, peft_types=frozenset({"PROMPT_TUNING", "LORA"}))
    lora_only = AdmissionLimits(peft_types=frozenset({"LORA"}))
    assert max_adapter_bytes(SMOLLM2, both) == max_adapter_bytes(SMOLLM2, lora_only)
    assert max_adapter_bytes(SMOLLM2, AdmissionLimits(peft_types=frozenset())) == SMALL_FILES


def test_largest_legit_adapter_fits_and_more_is_refused(
    tmp_path: Path, spec: BaseModelSpec, make_lora: MakeLora
) -> None:
    limits = fitted_limits(AdmissionLimits(max_lora_rank=8), spec)
    assert limits.max_total_bytes < 4 << 20  # the tiny base model: a few MB, not 1 GiB
    # Every module of every layer at the max rank, in the widest accepted dtype.
    largest = make_lora(tmp_path / "largest", rank=8, dtype=torch.float64)
    (largest / "README.md").write_bytes(b"#" * (1 << 20))
    store = Store(tmp_path / "store")
    with store.staging() as staged:
        extract_archive(io.BytesIO(tar_of_dir(largest, compress=False)), staged, limits)
        assert admit(staged, spec, limits).rank == 8

    (largest / "tokenizer.json").write_bytes(b"0" * (3 << 20))
    with pytest.raises(errors.TooLarge), store.staging() as staged:
        extract_archive(io.BytesIO(tar_of_dir(largest, compress=False)), staged, limits)
