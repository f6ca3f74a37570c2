"""What the app holds between requests, and the FastAPI dependencies that hand it out.

Each piece is injected on its own (``EngineDep``, ``ServiceDep``, ``TableDep``,
``ModelsDep``), so a handler's signature says what it touches. Every one but
``StateDep`` answers 503 until start-up has finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from ..adapters.service import AdapterService
from .engine.interface import Engine
from .errors import EngineUnavailable, NotReady
from .serving.models import ServedModels
from .serving.table import ServingTable


@dataclass
class Serving:
    """Everything requests need, complete once start-up has finished."""

    engine: Engine
    service: AdapterService
    table: ServingTable
    models: ServedModels


@dataclass
class AppState:
    #: Set as soon as the engine is up (``/health`` asks it), before ``serving``.
    engine: Engine | None = None
    #: Set once the engine is up and the start-up adapters are registered.
    serving: Serving | None = None
    #: Why start-up failed, if it did (the server keeps answering /health with it).
    startup_error: str | None = None

    @property
    def ready(self) -> bool:
        return self.serving is not None and self.startup_error is None


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.hotswap
    return state


def get_serving(state: Annotated[AppState, Depends(get_state)]) -> Serving:
    if state.startup_error is not None:
        raise EngineUnavailable(f"engine failed to start: {state.startup_error}")
    if state.serving is None:
        raise NotReady("the model is still loading; retry shortly")
    return state.serving


ServingDep = Annotated[Serving, Depends(get_serving)]


def get_engine(serving: ServingDep) -> Engine:
    return serving.engine


def get_service(serving: ServingDep) -> AdapterService:
    return serving.service


def get_table(serving: ServingDep) -> ServingTable:
    return serving.table


def get_models(serving: ServingDep) -> ServedModels:
    return serving.models


StateDep = Annotated[AppState, Depends(get_state)]
EngineDep = Annotated[Engine, Depends(get_engine)]
ServiceDep = Annotated[AdapterService, Depends(get_service)]
TableDep = Annotated[ServingTable, Depends(get_table)]
ModelsDep = Annotated[ServedModels, Depends(get_models)]
