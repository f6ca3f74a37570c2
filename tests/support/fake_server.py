"""A hotswap server process on the fake engine, served like ``hotswap serve`` serves
(``HotswapServer``: the SIGTERM drain and the exit status), for tests that signal or
watch a real process without paying for a real engine.

    PYTHONPATH=tests python -m support.fake_server --port P --store DIR [--step-delay S]
        [--drain-timeout S] [--die-after S]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

import uvicorn
from hotswap.server.engine.fake import FakeEngine
from hotswap.server.lifecycle import HotswapServer
from hotswap.server.limits import RequestLimits

from support.app import make_app


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--step-delay", type=float, default=0.0)
    parser.add_argument("--drain-timeout", type=float, default=25.0)
    parser.add_argument("--die-after", type=float, default=None,
                        help="the engine turns unhealthy this many seconds after start")
    args = parser.parse_args()
    logging.basicConfig(level="INFO", stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = FakeEngine()
    engine.step_delay = args.step_delay
    tasks: list[asyncio.Task[None]] = []

    async def start() -> FakeEngine:
        if args.die_after is not None:
            async def die() -> None:
                await asyncio.sleep(args.die_after)
                engine.healthy = False
            tasks.append(asyncio.get_running_loop().create_task(die()))
        return engine

    app = make_app(args.store, factory=start,
                   limits=RequestLimits(drain_timeout_s=args.drain_timeout))
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="info",
                            timeout_graceful_shutdown=2)
    server = HotswapServer(config, app.state.hotswap, args.drain_timeout)
    server.run()
    return server.exit_code


if __name__ == "__main__":
    sys.exit(main())
