"""A request body (an async byte iterator) read with blocking ``read(n)`` calls, so the
synchronous archive extractors can consume an upload from a worker thread as it arrives,
without the body ever being held whole."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio.from_thread

from ..errors import TooLarge
from . import CHUNK


class BlockingReader:
    """``read(n)`` over an async byte iterator; call it from an anyio worker thread."""

    def __init__(self, body: AsyncIterator[bytes]) -> None:
        self._body = body
        self._buffer = bytearray()
        self._eof = False
        self.received = 0  # bytes taken from the body so far

    def read(self, size: int = -1, /) -> bytes:
        while not self._eof and (size < 0 or len(self._buffer) < size):
            chunk = anyio.from_thread.run(self._next)
            if chunk is None:
                self._eof = True
            else:
                self.received += len(chunk)
                self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def drain(self, limit: int) -> None:
        """Read to the end of the body, discarding; TooLarge once the whole body (the
        archive included) passes ``limit`` bytes."""
        while self.received <= limit:
            if self._eof:
                return
            self._buffer.clear()
            self.read(CHUNK)
        raise TooLarge(f"upload exceeds {limit} bytes")

    async def _next(self) -> bytes | None:
        try:
            return await anext(self._body)
        except StopAsyncIteration:
            return None
