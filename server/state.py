"""What the app holds between requests, and the FastAPI dependencies that hand it out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from .catalog import Catalog
from .engine.interface import Engine
from .errors import EngineUnavailable, NotReady


@dataclass
class AppState:
    engine: Engine | None = None
    catalog: Catalog | None = None
    #: Set once the engine is up and the start-up adapters are registered.
    ready: bool = False
    #: Why start-up failed, if it did (the server keeps answering /health with it).
    startup_error: str | None = None
    served_model_name: str | None = None
    extras: dict[str, object] = field(default_factory=dict)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.hotswap
    return state


def get_engine(state: Annotated[AppState, Depends(get_state)]) -> Engine:
    if state.startup_error is not None:
        raise EngineUnavailable(f"engine failed to start: {state.startup_error}")
    if not state.ready or state.engine is None:
        raise NotReady("the model is still loading; retry shortly")
    return state.engine


def get_catalog(
    state: Annotated[AppState, Depends(get_state)],
    _: Annotated[Engine, Depends(get_engine)],
) -> Catalog:
    assert state.catalog is not None
    return state.catalog


StateDep = Annotated[AppState, Depends(get_state)]
EngineDep = Annotated[Engine, Depends(get_engine)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
