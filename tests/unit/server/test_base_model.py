"""Reading the served base model's admission spec and size (server/base_model.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hotswap.server.base_model import read_base_spec, weights_bytes
from support.fakes import TINY_LLAMA_CONFIG, TINY_SPEC


def test_local_dir(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(TINY_LLAMA_CONFIG))
    (tmp_path / "model.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / "tokenizer.json").write_bytes(b"y" * 50)
    spec = read_base_spec(str(tmp_path))
    assert spec is not None and spec.fingerprint == TINY_SPEC.fingerprint
    assert weights_bytes(str(tmp_path)) == 1000


def test_unreadable_config_disables_admission(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with caplog.at_level(logging.WARNING):
        assert read_base_spec(str(tmp_path)) is None
        assert read_base_spec(str(tmp_path / "missing")) is None
        # A hub id that is not in the local cache: no network call, just a warning.
        assert read_base_spec("no-such-org/no-such-model-xyz") is None
    assert "gpt2" in caplog.text
    assert weights_bytes("no-such-org/no-such-model-xyz") is None
