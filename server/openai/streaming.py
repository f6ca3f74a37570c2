"""Server-sent events: framing, the response that carries them, and priming.

A stream's status line goes out with its first byte, so anything that can still fail
with a proper 4xx (the engine refusing the input, an adapter that does not load) must
fail before: :func:`primed` waits for the first item. After that, an error can only be
told as an error event inside the stream.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from ..errors import from_exception, to_body

T = TypeVar("T")

DONE = "data: [DONE]\n\n"


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def sse_events(events: AsyncIterator[BaseModel], *, include_usage: bool
                     ) -> AsyncGenerator[str, None]:
    """Frame chunk models as SSE. OpenAI sends ``"usage": null`` on every chunk when the
    client asked for usage, and no ``usage`` key otherwise."""
    exclude = None if include_usage else {"usage"}
    try:
        async for event in events:
            yield sse(event.model_dump(mode="json", exclude=exclude))
    except Exception as exc:  # the status line is sent; this is the only way to tell
        yield sse(to_body(from_exception(exc)))
    yield DONE


class SSEResponse(StreamingResponse):
    """``text/event-stream`` that runs ``on_close`` when the response ends, however it
    ends: a client that disconnects aborts the engine request and releases its adapter
    now, not when the garbage collector finds a half-read generator (nor never, for a
    body generator that had not started)."""

    def __init__(self, body: AsyncGenerator[str, None],
                 on_close: Callable[[], Awaitable[None]]) -> None:
        super().__init__(body, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._body = body
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._body.aclose()
            await self._on_close()


async def primed(items: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
    """``items`` after its first item has arrived (raising what the first step raises)."""
    try:
        first = await anext(items)
    except StopAsyncIteration:
        await items.aclose()
        return _empty()

    async def chained() -> AsyncGenerator[T, None]:
        async with contextlib.aclosing(items):
            yield first
            async for item in items:
                yield item

    return chained()


async def _empty() -> AsyncGenerator[Any, None]:
    return
    yield
