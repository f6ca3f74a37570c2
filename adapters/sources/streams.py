"""The byte streams the archive extractors read: what they accept, and the upload as a
read-only file counted against a byte cap."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Protocol

from ..errors import TooLarge

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


class Readable(Protocol):
    """Anything with ``read(n)``: a file, ``UploadFile.file``, a socket reader."""

    def read(self, size: int = -1, /) -> bytes: ...


class CappedInput(io.RawIOBase):
    """``stream`` as a read-only binary file, counted against a byte cap, with a peekable
    head (for format detection without consuming it)."""

    def __init__(self, stream: Readable, cap: int) -> None:
        super().__init__()
        self._stream = stream
        self._cap = cap
        self._count = 0
        self._head = b""

    def readable(self) -> bool:
        return True

    def peek(self, size: int) -> bytes:
        while len(self._head) < size:
            chunk = self._pull(size - len(self._head))
            if not chunk:
                break
            self._head += chunk
        return self._head

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            data, self._head = self._head[: len(view)], self._head[len(view) :]
        else:
            data = self._pull(len(view))
        view[: len(data)] = data
        return len(data)

    def _pull(self, size: int) -> bytes:
        data = self._stream.read(size)
        self._count += len(data)
        if self._count > self._cap:
            raise TooLarge(f"upload exceeds {self._cap} bytes")
        return data
