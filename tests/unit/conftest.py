"""HTTP-layer fixtures: the real app in process, on the deterministic fake engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from hotswap.server.app import create_app
from hotswap.server.engine.fake import FakeEngine
from support.fakes import make_adapter_dir, service_options
from support.http import wait_ready


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine(model_name="fake-base", max_model_len=512)


@pytest.fixture
async def app(fake_engine: FakeEngine, tmp_path: Path) -> AsyncIterator[FastAPI]:
    async def factory() -> FakeEngine:
        return fake_engine

    adapters = [("sql-writer", make_adapter_dir(tmp_path, "a", seed=1)),
                ("extract", make_adapter_dir(tmp_path, "b", seed=2))]
    import_root = tmp_path / "imports"
    import_root.mkdir()
    application = create_app(factory, service_options(tmp_path, (import_root,)), adapters)
    async with LifespanManager(application):
        yield application


@pytest.fixture
def import_root(tmp_path: Path) -> Path:
    """The app's only --import-root (created by the ``app`` fixture)."""
    return tmp_path / "imports"


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        await wait_ready(c)
        yield c
