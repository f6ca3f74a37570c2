"""HTTP-layer fixtures: the real app in process, on the deterministic fake engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from hotswap.server.app import create_app
from hotswap.server.engine.fake import FakeEngine
from support.fakes import make_adapter_dir


async def wait_ready(client: httpx.AsyncClient) -> None:
    for _ in range(200):
        if (await client.get("/ready")).status_code == 200:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("app never became ready")


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine(model_name="fake-base", max_model_len=512)


@pytest.fixture
async def app(fake_engine: FakeEngine, tmp_path: Path) -> AsyncIterator[FastAPI]:
    async def factory() -> FakeEngine:
        return fake_engine

    adapters = [("sql-writer", make_adapter_dir(tmp_path, "a")),
                ("extract", make_adapter_dir(tmp_path, "b"))]
    application = create_app(factory, adapters)
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        await wait_ready(c)
        yield c
