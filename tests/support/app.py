"""The one way tests run the real app on the fake engine: in process (httpx over ASGI,
with the lifespan) or on a real socket (uvicorn, for what only a socket shows, such as
a client disconnecting)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from hotswap.adapters.service import ServiceOptions
from hotswap.server.app import create_app
from hotswap.server.auth import Security
from hotswap.server.engine.fake import FakeEngine
from hotswap.server.limits import RequestLimits

from support.fakes import service_options
from support.http import wait_ready


def make_app(tmp_path: Path, engine: FakeEngine | None = None, *,
             options: ServiceOptions | None = None,
             adapters: Sequence[tuple[str, Path]] = (),
             factory: Callable[[], Awaitable[FakeEngine]] | None = None,
             security: Security | None = None,
             limits: RequestLimits | None = None) -> FastAPI:
    """The app on ``engine`` (a new FakeEngine by default) with a store under
    ``tmp_path``; ``factory`` replaces the engine start (tests of start-up states);
    ``security``: keys and Host allowlist (default: open); ``limits``: request bounds."""
    fake = engine or FakeEngine()

    async def start() -> FakeEngine:
        return fake

    return create_app(factory or start, options or service_options(tmp_path), list(adapters),
                      security, limits)


@asynccontextmanager
async def in_process(app: FastAPI, *, ready: bool = True,
                     base_url: str = "http://test") -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app`` in process, with its lifespan run; waits for /ready unless
    ``ready`` is False."""
    async with LifespanManager(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=base_url) as client:
        if ready:
            await wait_ready(client)
        yield client


@asynccontextmanager
async def app_client(tmp_path: Path, engine: FakeEngine | None = None, *,
                     options: ServiceOptions | None = None,
                     adapters: Sequence[tuple[str, Path]] = ()
                     ) -> AsyncIterator[httpx.AsyncClient]:
    """``in_process(make_app(...))``: the usual test client."""
    async with in_process(make_app(tmp_path, engine, options=options,
                                   adapters=adapters)) as client:
        yield client


@asynccontextmanager
async def on_socket(app: FastAPI) -> AsyncIterator[str]:
    """``app`` served by uvicorn on a free loopback port; yields its URL once ready."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        while not app.state.hotswap.ready:
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
