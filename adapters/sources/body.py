"""An upload body read off the event loop's clock, never holding a worker thread while
the network is slow: the async side takes chunks from the request (each within
``idle_timeout_s``) and appends them to a temporary file on the store's filesystem
(each write a short hop to a worker thread), counting against the byte cap. Extraction
then runs from that file in one worker thread, as fast as the disk allows.

Holding the archive on disk rather than in memory costs at most the upload cap; it also
means a half-sent upload never reaches the extractor.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import anyio.to_thread

from ..errors import TooLarge, UploadIncomplete


async def spool(body: AsyncIterator[bytes], directory: Path, limit: int,
                idle_timeout_s: float) -> IO[bytes]:
    """The whole of ``body`` in an anonymous temporary file in ``directory``, rewound.

    TooLarge past ``limit`` bytes; UploadIncomplete when no byte arrives for
    ``idle_timeout_s`` seconds. The caller closes the file (closing deletes it)."""
    # Not a context manager: the file outlives this call, handed to the caller open.
    spooled = await anyio.to_thread.run_sync(
        lambda: tempfile.TemporaryFile(dir=directory, prefix="upload-"))  # noqa: SIM115
    received = 0
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(anext(body), idle_timeout_s)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise UploadIncomplete(
                    f"upload stalled: no data for {idle_timeout_s:g} s; nothing stored"
                ) from None
            received += len(chunk)
            if received > limit:
                raise TooLarge(f"upload exceeds {limit} bytes")
            if chunk:
                await anyio.to_thread.run_sync(spooled.write, chunk)
        await anyio.to_thread.run_sync(spooled.seek, 0)
    except BaseException:
        spooled.close()
        raise
    return spooled
