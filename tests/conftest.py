"""Session-wide fixtures shared by unit and integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest


def hotswap_home() -> Path:
    from hotswap.server.config import home_from_env

    return home_from_env()


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """The bundled SmolLM2-135M-Instruct as a safetensors dir (prepared once, then reused)."""
    from hotswap.server.model_prep import prepare_bundled_model

    return prepare_bundled_model(hotswap_home())
