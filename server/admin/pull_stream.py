"""``POST /v1/adapters/pull`` with ``"stream": true``: NDJSON progress lines while the
download (hub or object storage) runs, the last one ``success`` or ``error``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ...adapters.manifest import Manifest
from ..errors import from_exception, to_body
from .protocol import AdapterVersion, TaggedVersion


async def pull_events(start: Callable[..., Awaitable[Manifest]],
                      first: dict[str, Any], name: str, tag: str) -> AsyncIterator[str]:
    """``start(on_progress=...)``: the pull; ``first``: the ``pulling`` line's fields."""
    loop = asyncio.get_running_loop()
    progress: asyncio.Queue[tuple[int, int]] = asyncio.Queue()

    def on_progress(done: int, total: int) -> None:  # from the download thread
        loop.call_soon_threadsafe(progress.put_nowait, (done, total))

    # A task of its own: a client that disconnects stops the stream, not the pull.
    pull = asyncio.ensure_future(start(on_progress=on_progress))
    pull.add_done_callback(_retrieve)  # a failure nobody streams any more is not "lost"
    yield _line({"status": "pulling", **first})
    update: asyncio.Task[tuple[int, int]] | None = None
    try:
        while not pull.done():
            update = asyncio.create_task(progress.get())
            await asyncio.wait({pull, update}, return_when=asyncio.FIRST_COMPLETED)
            if update.done():
                done, total = update.result()
                yield _line({"status": "downloading", "completed": done, "total": total})
    finally:
        if update is not None:
            update.cancel()
    try:
        manifest = pull.result()
    except Exception as exc:  # every failure becomes an error line
        yield _line({"status": "error", **to_body(from_exception(exc))})
        return
    result = TaggedVersion(name=name, tag=tag, version=AdapterVersion.of(manifest))
    yield _line({"status": "success", **result.model_dump(mode="json")})


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _line(payload: dict[str, Any]) -> str:
    return json.dumps(payload) + "\n"
