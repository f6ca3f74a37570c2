"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .auth import Scope, authenticate, require
from .deps import StateDep
from .engine.interface import EngineError

router = APIRouter(tags=["health"])
_metrics_scope = require(Scope.METRICS)


@router.get("/health", summary="Liveness: 200 while the process and engine are alive")
async def health(state: StateDep) -> JSONResponse:
    if state.startup_error is not None:
        return JSONResponse({"status": "failed", "error": state.startup_error}, status_code=503)
    if state.engine is None:
        # Still starting: alive, not ready. Probes that must wait use /ready.
        return JSONResponse({"status": "starting"})
    try:
        await state.engine.check_health()
    except EngineError as exc:
        return JSONResponse({"status": "dead", "error": str(exc)}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/ready", summary="Readiness: 200 once the model and start-up adapters are loaded")
async def ready(state: StateDep) -> JSONResponse:
    if state.ready and state.startup_error is None:
        return JSONResponse({"status": "ready"})
    status = "failed" if state.startup_error else "starting"
    return JSONResponse({"status": status, "error": state.startup_error}, status_code=503)


@router.get("/metrics", summary="Prometheus metrics (hotswap_* and the engine's vllm:*)")
async def metrics(request: Request) -> Response:
    if request.app.state.hotswap_metrics_auth:
        await _metrics_scope(await authenticate(request))  # --metrics-auth
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
