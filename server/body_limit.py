"""Request bodies bounded in size and in time, before any route parses them.

FastAPI reads a JSON body whole and parses it on the event loop, so without a cap one
64 MiB body stalls every other request. This ASGI middleware refuses a body over
``--max-body-bytes`` (413: at once from Content-Length, or as soon as a chunked body
passes it) and one that stops arriving for ``--body-idle-timeout`` (408), then hands
the app the body it read. The adapter upload is exempt: it streams to disk under the
adapter size cap and its own idle timeout (adapters/sources/body.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import PayloadTooLarge, RequestTimeout, send_error


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int, idle_timeout_s: float,
                 exempt: Callable[[Scope], bool]) -> None:
        self._app = app
        self._max = max_bytes
        self._idle = idle_timeout_s
        self._exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._exempt(scope):
            await self._app(scope, receive, send)
            return
        length, chunked = None, False
        for k, v in scope["headers"]:
            if k == b"content-length":
                length = int(v) if v.isdigit() else None
            chunked = chunked or k == b"transfer-encoding"
        if not chunked and not length:
            await self._app(scope, receive, send)
            return
        if length is not None and length > self._max:
            await send_error(send, self._too_large())
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self._idle)
            except TimeoutError:
                await send_error(send, RequestTimeout(
                    f"the request body sent nothing for {self._idle:g} s"))
                return
            if message["type"] == "http.disconnect":
                return  # nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max:
                await send_error(send, self._too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: bytes | None = b"".join(chunks)

        async def replay() -> Message:
            # The body once, then the connection's own events (a disconnect, which
            # non-streaming requests watch for to abort their generation).
            nonlocal body
            if body is not None:
                message, body = {"type": "http.request", "body": body,
                                 "more_body": False}, None
                return message
            return await receive()

        await self._app(scope, replay, send)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body over {self._max} bytes (--max-body-bytes)")
