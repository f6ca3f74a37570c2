"""HTTP-layer fixtures: the real app in process, on the deterministic fake engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from hotswap.server.engine.fake import FakeEngine
from support.app import in_process, make_app
from support.fakes import make_adapter_dir, service_options


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine(model_name="fake-base", max_model_len=512)


@pytest.fixture
def app(fake_engine: FakeEngine, tmp_path: Path) -> FastAPI:
    """The app with two stored adapters (sql-writer, extract) and one --import-root."""
    adapters = [("sql-writer", make_adapter_dir(tmp_path, "a", seed=1)),
                ("extract", make_adapter_dir(tmp_path, "b", seed=2))]
    import_root = tmp_path / "imports"
    import_root.mkdir()
    # No gc grace: a version nothing uses or points at goes at once, so tests see it go
    # (the grace period itself: test_files_outlive_users.py, test_store_gc_grace.py).
    options = replace(service_options(tmp_path, (import_root,)), gc_grace_s=0)
    return make_app(tmp_path, fake_engine, options=options, adapters=adapters)


@pytest.fixture
def import_root(tmp_path: Path) -> Path:
    """The app's only --import-root (created by the ``app`` fixture)."""
    return tmp_path / "imports"


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(app) as c:
        yield c
