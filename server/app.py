"""The FastAPI application: routers, the error table, and the start-up sequence.

The HTTP server comes up at once; the engine starts in the background, so ``/health``
answers during the (tens of seconds) model load and ``/ready`` turns 200 when the model
and the start-up adapters are loaded. Every other route answers 503 until then.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.types import Scope

from ..adapters.service import AdapterService, ServiceOptions
from . import health
from .admin import adapters, listing, vllm_compat
from .auth import ADMIN, ADMIN_PORT, INFERENCE, Security
from .body_limit import BodyLimit
from .deps import AppState, Serving
from .engine.interface import Engine
from .errors import install_error_handlers
from .guards import UPLOAD_PATH, RequestGuard
from .lifecycle import DrainGate, watch_engine
from .limits import RequestLimits
from .metrics.scrape import Scraper
from .openai.routers import ROUTERS
from .serving.models import ServedModels
from .serving.table import ServingTable

log = logging.getLogger(__name__)

EngineFactory = Callable[[], Awaitable[Engine]]


async def start_serving(engine: Engine, options: ServiceOptions,
                        startup_adapters: list[tuple[str, Path]]) -> Serving:
    """Open the store, import and load the ``--adapter`` dirs (a bad one fails), and
    register what the ``--watch`` sources hold (a bad one is listed as refused)."""
    service = await AdapterService.open(options)
    table = ServingTable(engine, service.path, on_dropped=service.collect)
    # Deleted versions' files stay while a request or the engine may still read them.
    service.set_in_use(table.digests_in_use)
    models = ServedModels(engine.model_name, service, table)
    for name, path in startup_adapters:
        await models.register(await service.import_dir(name, path), load=True)
    watcher = service.watcher(on_removed=models.retire_unreferenced)
    if watcher is not None:
        await watcher.sync()  # ready means the watched adapters are served
    return Serving(engine=engine, service=service, table=table, models=models,
                   watcher=watcher)


def create_app(
    engine_factory: EngineFactory,
    options: ServiceOptions,
    startup_adapters: list[tuple[str, Path]] | None = None,
    security: Security | None = None,
    limits: RequestLimits | None = None,
) -> FastAPI:
    """Build the app. ``engine_factory`` is awaited in the background at start-up.

    ``startup_adapters`` (``--adapter NAME=PATH``) are imported into the store like any
    other adapter, then loaded into the engine, so a bad one stops the start. Without
    ``security`` the app is open (no keys, any Host); ``limits``: the defaults."""
    security = security or Security()
    limits = limits or RequestLimits()
    state = AppState(limits=limits)
    watchers: list[asyncio.Task[None]] = []

    async def start() -> None:
        try:
            state.engine = await engine_factory()
            watchers.append(asyncio.create_task(watch_engine(state.engine, state)))
            state.serving = await start_serving(state.engine, options, startup_adapters or [])
            if state.serving.watcher is not None:
                watchers.append(asyncio.create_task(state.serving.watcher.run()))
            log.info("ready: serving %s; %d adapter id(s) in the store",
                     state.engine.model_name, len(await state.serving.models.adapters()))
        except Exception as exc:
            log.exception("start-up failed")
            # Public (/health answers without a key): the kind of failure, not its text,
            # which may name server paths. The log has the whole story.
            code = getattr(exc, "code", None)
            state.startup_error = (f"{type(exc).__name__}" + (f" ({code})" if code else "")
                                   + ": see the server log")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(start())
        try:
            yield
        finally:
            task.cancel()
            for watcher in watchers:
                watcher.cancel()
            if state.engine is not None:
                await state.engine.shutdown()

    app = FastAPI(
        title="hotswap",
        summary="One frozen base model, many task adapters, one OpenAI-compatible endpoint.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.hotswap = state
    app.state.hotswap_keys = security.keys
    app.state.hotswap_metrics_auth = security.metrics_auth
    app.state.hotswap_admin_port = security.admin_port
    app.state.hotswap_scraper = Scraper()
    install_error_handlers(app)
    # The auth stage runs before every API route: reading needs the inference scope,
    # changing adapters the admin scope. /health and /ready stay open (probes carry no
    # key); /metrics too unless --metrics-auth.
    for router in ROUTERS:
        app.include_router(router, dependencies=[INFERENCE])
    app.include_router(listing.router, dependencies=[INFERENCE])
    app.include_router(adapters.router, dependencies=[ADMIN_PORT, ADMIN])
    app.include_router(vllm_compat.router, dependencies=[ADMIN_PORT, ADMIN])
    app.include_router(health.router)
    # Outermost last: Host / origin / content type, then the drain gate (which counts the
    # request), then the body bounds.
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes,
                       idle_timeout_s=limits.body_idle_timeout_s, exempt=_is_upload)
    app.add_middleware(DrainGate, state=state)
    app.add_middleware(RequestGuard, allowed_hosts=security.allowed_hosts)
    _document_400_not_422(app)
    return app


def _document_400_not_422(app: FastAPI) -> None:
    """FastAPI documents a 422 ``HTTPValidationError`` on every route with inputs; this
    app answers schema violations with 400 and the OpenAI error body (errors.py), as
    OpenAI does. Keep the 422s routes document themselves (adapter refusals)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for operations in schema["paths"].values():
                for operation in operations.values():
                    responses = operation.get("responses", {})
                    if "HTTPValidationError" in json.dumps(responses.get("422", {})):
                        del responses["422"]
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _is_upload(scope: Scope) -> bool:
    return bool(scope["method"] == "POST" and scope["path"].rstrip("/") == UPLOAD_PATH)
