"""The FastAPI application: routes, error table, and the engine's life cycle.

The HTTP server comes up at once; the engine starts in the background, so
``/health`` answers during the (tens of seconds) model load and ``/ready`` turns
200 when the model and the start-up adapters are loaded. Inference endpoints
answer 503 until then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from .catalog import Catalog
from .engine.interface import Engine
from .errors import install_error_handlers
from .registry import Registry, RegistryOptions
from .routes import adapters, health, openai
from .state import AppState

log = logging.getLogger(__name__)

EngineFactory = Callable[[], Awaitable[Engine]]


def create_app(
    engine_factory: EngineFactory,
    registry: RegistryOptions,
    startup_adapters: list[tuple[str, Path]] | None = None,
) -> FastAPI:
    """Build the app. ``engine_factory`` is awaited in the background at start-up.

    ``startup_adapters`` (``--adapter NAME=PATH``) are imported into the store like any
    other adapter, then loaded into the engine, so a bad one stops the start."""
    state = AppState()

    async def start() -> None:
        try:
            engine = await engine_factory()
            state.engine = engine
            catalog = Catalog(engine.model_name, await Registry.open(registry), engine)
            for name, path in startup_adapters or []:
                manifest = await catalog.registry.import_dir(name, path)
                await catalog.load(catalog.spec_for(manifest))
            state.catalog = catalog
            state.ready = True
            log.info("ready: serving %s; %d adapter id(s) in the store", engine.model_name,
                     len(await catalog.entries()))
        except Exception as exc:
            log.exception("start-up failed")
            state.startup_error = str(exc) or type(exc).__name__

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(start())
        try:
            yield
        finally:
            task.cancel()
            if state.engine is not None:
                await state.engine.shutdown()

    app = FastAPI(
        title="hotswap",
        summary="One frozen base model, many task adapters, one OpenAI-compatible endpoint.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.hotswap = state
    install_error_handlers(app)
    app.include_router(openai.router)
    app.include_router(adapters.router)
    app.include_router(health.router)
    return app
