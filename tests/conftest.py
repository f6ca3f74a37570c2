"""Session-wide fixtures shared by unit and integration tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def hotswap_home() -> Path:
    return Path(os.environ.get("HOTSWAP_HOME", Path.home() / ".cache" / "hotswap"))


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """The bundled SmolLM2-135M-Instruct as a safetensors dir (prepared once, then reused)."""
    from hotswap.server.model_prep import prepare_bundled_model

    return prepare_bundled_model(hotswap_home())
