"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from .admin.responses import Responses, errors, json_errors
from .auth import Scope, authenticate, require
from .deps import StateDep
from .engine.interface import EngineError
from .metrics.scrape import CONTENT_TYPE, Scraper

#: Probes carry no key and skip the drain gate: only the guard's refusals apply to them.
GUARD = (400, 421)

router = APIRouter(tags=["health"], responses=errors(*GUARD, why={
    400: "A repeated Host header"}))
_metrics_scope = require(Scope.METRICS)


class Liveness(BaseModel):
    #: 200: "ok", or "starting" (alive, not ready yet); 503: "failed" (start-up failed)
    #: or "dead" (the engine died or fails its health check).
    status: Literal["ok", "starting", "failed", "dead"]
    error: str | None = None


#: 200: "ready"; 503: "starting", "draining" (SIGTERM), "failed" or "dead".
ReadinessStatus = Literal["ready", "starting", "draining", "failed", "dead"]


class Readiness(BaseModel):
    status: ReadinessStatus
    error: str | None = None


def _probe(body: Liveness | Readiness, status_code: int = 200) -> JSONResponse:
    # Only the fields set: {"status": "ok"} stays exactly that.
    return JSONResponse(body.model_dump(exclude_unset=True), status_code=status_code)


LIVENESS: Responses = {
    200: {"model": Liveness, "description": "Alive (ok, or still starting)"},
    503: {"model": Liveness, "description": "Start-up failed or the engine is dead"},
}
READINESS: Responses = {
    200: {"model": Readiness, "description": "Ready to serve"},
    503: {"model": Readiness, "description": "Starting, draining, failed or dead"},
}
METRICS: Responses = {
    200: {"content": {"text/plain": {"schema": {"type": "string"}}},
          "description": "Prometheus text exposition format"},
    **json_errors(401, 403, why={401: "--metrics-auth: API key missing or not valid",
                                 403: "--metrics-auth: the key lacks the metrics scope"}),
}


@router.get("/health", responses=LIVENESS,
            summary="Liveness: 200 while the process and engine are alive")
async def health(state: StateDep) -> JSONResponse:
    if state.startup_error is not None:
        return _probe(Liveness(status="failed", error=state.startup_error), 503)
    if state.engine_dead is not None:
        return _probe(Liveness(status="dead", error=state.engine_dead), 503)
    if state.engine is None:
        # Still starting: alive, not ready. Probes that must wait use /ready.
        return _probe(Liveness(status="starting"))
    try:
        await state.engine.check_health()
    except EngineError as exc:
        return _probe(Liveness(status="dead", error=str(exc)), 503)
    return _probe(Liveness(status="ok"))


@router.get("/ready", responses=READINESS,
            summary="Readiness: 200 once the model and start-up adapters are loaded")
async def ready(state: StateDep) -> JSONResponse:
    if state.ready:
        return _probe(Readiness(status="ready"))
    error = state.startup_error or state.engine_dead
    status: ReadinessStatus = (
        "failed" if state.startup_error else "dead" if state.engine_dead
        else "draining" if state.draining else "starting")
    return _probe(Readiness(status=status, error=error), 503)


@router.get("/metrics", responses=METRICS, response_class=Response,
            summary="Prometheus metrics (hotswap_* and the engine's vllm:*)")
async def metrics(request: Request, state: StateDep) -> Response:
    if request.app.state.hotswap_metrics_auth:
        await _metrics_scope(await authenticate(request))  # --metrics-auth
    scraper: Scraper = request.app.state.hotswap_scraper
    body = await scraper.render(state)
    return Response(body, media_type=CONTENT_TYPE)
