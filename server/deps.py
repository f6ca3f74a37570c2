"""What the app holds between requests, and the FastAPI dependencies that hand it out.

Each piece is injected on its own (``EngineDep``, ``ServiceDep``, ``TableDep``,
``ModelsDep``), so a handler's signature says what it touches. Every one but
``StateDep`` answers 503 until start-up has finished.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

import anyio
from fastapi import Depends, Request

from ..adapters.service import AdapterService
from ..adapters.watch import Watcher
from .backpressure import InFlight
from .engine.interface import Engine
from .errors import EngineUnavailable, NotReady
from .lifecycle import ActiveRequests
from .limits import RequestLimits
from .serving.models import ServedModels
from .serving.table import ServingTable


@dataclass
class Serving:
    """Everything requests need, complete once start-up has finished."""

    engine: Engine
    service: AdapterService
    table: ServingTable
    models: ServedModels
    #: Keeps the --watch sources registered; None when nothing is watched.
    watcher: Watcher | None = None


@dataclass
class AppState:
    #: Set as soon as the engine is up (``/health`` asks it), before ``serving``.
    engine: Engine | None = None
    #: Set once the engine is up and the start-up adapters are registered.
    serving: Serving | None = None
    #: Why start-up failed, if it did (the server keeps answering /health with it).
    startup_error: str | None = None
    limits: RequestLimits = field(default_factory=RequestLimits)
    #: Sequences generating now (backpressure.py), created with ``limits``.
    in_flight: InFlight = field(init=False)
    #: Requests in progress (lifecycle.py: the drain waits for them).
    active: ActiveRequests = field(default_factory=ActiveRequests)
    #: SIGTERM received: readiness is 503 and new requests are refused.
    draining: bool = False
    #: Why the engine died, once it has (the process is exiting).
    engine_dead: str | None = None
    #: What to call when the server can not go on (the engine died): the CLI's server
    #: exits non-zero; without one (tests, embedding) it is only logged.
    on_fatal: Callable[[str], None] | None = None
    _tokenizing: anyio.CapacityLimiter | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.in_flight = InFlight(self.limits.max_in_flight, self.limits.max_in_flight_per_key)

    @property
    def tokenizing(self) -> anyio.CapacityLimiter:
        """The one worker thread prompts are tokenized and templated in. One: Hugging
        Face's fast tokenizers are not safe to call from two threads at once ("Already
        borrowed"), as vLLM's server also has it; made on first use, inside the loop."""
        if self._tokenizing is None:
            self._tokenizing = anyio.CapacityLimiter(1)
        return self._tokenizing

    @property
    def ready(self) -> bool:
        return (self.serving is not None and self.startup_error is None
                and not self.draining and self.engine_dead is None)

    def fatal(self, reason: str) -> None:
        if self.on_fatal is not None:
            self.on_fatal(reason)
        else:
            logging.getLogger(__name__).critical("%s (nothing to exit: no server hook)",
                                                 reason)


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


def get_watcher(serving: ServingDep) -> Watcher | None:
    return serving.watcher


StateDep = Annotated[AppState, Depends(get_state)]
EngineDep = Annotated[Engine, Depends(get_engine)]
ServiceDep = Annotated[AdapterService, Depends(get_service)]
TableDep = Annotated[ServingTable, Depends(get_table)]
ModelsDep = Annotated[ServedModels, Depends(get_models)]
WatcherDep = Annotated[Watcher | None, Depends(get_watcher)]
