"""How the process ends: draining on SIGTERM, and exiting when the engine dies.

- **Drain**: on the first SIGTERM, ``/ready`` turns 503 at once (the load balancer stops
  sending), requests that arrive meanwhile get 503 ``draining`` (retry elsewhere), and
  requests in flight run to their end; once none is left, or ``--drain-timeout`` has
  passed, uvicorn shuts down and the process exits 0. A second SIGTERM, or SIGINT, is
  uvicorn's own immediate shutdown.
- **Engine death**: a watcher asks the engine for its health every second; when it has
  died, ``/health`` and ``/ready`` answer 503, requests in flight get an error from the
  engine (not a hang), and the process exits 1 so the orchestrator restarts it. A
  server without its engine would otherwise stay up answering 503 forever.
- **Heap freeze**: once the engine is up, the start-up heap is frozen out of the
  garbage collector (see ``freeze_startup_heap``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from .engine.interface import Engine, EngineError
from .errors import Draining, send_error

if TYPE_CHECKING:
    from .deps import AppState

log = logging.getLogger(__name__)


def freeze_startup_heap() -> None:
    """Move every object alive now (torch, transformers, vLLM: ~400k of them) out of the
    collector's sight, as vLLM's own server does after start-up (``freeze_gc_heap``).
    Without it, a request body that parses into many containers (100,000 one-token
    prompts are 100,000 lists) triggers a full collection that walks the whole heap
    with the event loop held: 0.4 s measured here, against 0.03 s frozen. Call it once,
    when the engine is up and before the server reports ready."""
    gc.collect()
    gc.freeze()
    log.info("froze %d start-up objects out of the garbage collector", gc.get_freeze_count())

#: Routes probes and scrapers call: never refused while draining, not waited for.
PROBE_PATHS = frozenset({"/health", "/ready", "/metrics"})
#: Seconds between two engine health checks (a dead engine is noticed within this).
ENGINE_WATCH_INTERVAL_S = 1.0
#: Exit status when the engine died.
ENGINE_DEAD_EXIT = 1


class ActiveRequests:
    """Requests (probes aside) the app is answering now."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if not self.count:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """True once no request is left; False if ``timeout_s`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


class DrainGate:
    """ASGI middleware: counts requests in progress, refuses new ones while draining."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self._app = app
        self._state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBE_PATHS:
            await self._app(scope, receive, send)
            return
        if self._state.draining:
            await send_error(send, Draining())
            return
        self._state.active.enter()
        try:
            await self._app(scope, receive, send)
        finally:
            self._state.active.leave()


class HotswapServer(uvicorn.Server):
    """uvicorn with a drain on SIGTERM and an exit status for a dead engine."""

    def __init__(self, config: uvicorn.Config, state: AppState, drain_timeout_s: float
                 ) -> None:
        super().__init__(config)
        self._state = state
        self._drain_timeout_s = drain_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.exit_code = 0
        state.on_fatal = self._fatal

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self._state.draining or self._loop is None:
            super().handle_exit(sig, frame)
            return
        # A signal handler runs between two bytecodes of the loop's thread: only flag
        # and schedule here.
        self._state.draining = True
        self._loop.call_soon_threadsafe(self._start, self._drain())

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        active = self._state.active
        log.info("SIGTERM: draining %d request(s) in flight (up to %g s)", active.count,
                 self._drain_timeout_s)
        if not await active.wait_idle(self._drain_timeout_s):
            log.warning("drain timeout: %d request(s) still in flight are cut off",
                        active.count)
        self.should_exit = True

    def _fatal(self, reason: str) -> None:
        log.critical("exiting: %s", reason)
        self.exit_code = ENGINE_DEAD_EXIT
        self.should_exit = True


async def watch_engine(engine: Engine, state: AppState) -> None:
    """Until the engine dies: then record it and ask the server to exit."""
    while True:
        await asyncio.sleep(ENGINE_WATCH_INTERVAL_S)
        try:
            await engine.check_health()
        except EngineError as exc:
            state.engine_dead = str(exc) or type(exc).__name__
            log.error("the engine died: %s", state.engine_dead)
            state.fatal(f"the engine died ({state.engine_dead})")
            return


FatalHook = Callable[[str], None]
