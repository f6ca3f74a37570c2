"""A TCP proxy on loopback that can cut a download midway, for tests of what a client does
when a connection dies mid-body (a real TCP reset, not a mocked exception).

Each accepted connection gets its own connection to the upstream and one thread that
pipes bytes both ways. With ``cut_after`` set, a connection that would carry more than
``cut_after`` bytes upstream -> client gets exactly ``cut_after`` of them (HTTP headers
count: they are bytes like any other), then both of its sockets are closed with
``SO_LINGER`` 0, so the client sees ``ECONNRESET`` rather than a clean end. A response that
fits in ``cut_after`` passes untouched. The count is per connection, from its start, and
keep-alive connections carry several responses: a client that reuses a pooled connection
has its count add up over them. ``cut_after`` is read afresh for every chunk, so a test can
change it at any time (``None`` turns cutting off).

What boto3 (1.44, urllib3 2.x) raises when a ``get_object`` body is cut this way: the call
itself returns (the headers fit), and ``response["Body"].read()`` raises
``botocore.exceptions.ResponseStreamingError`` (a ``HTTPClientError``, so a
``BotoCoreError``; not a ``ClientError``), raised while handling urllib3's ``ProtocolError``
(its ``__context__``; there is no ``__cause__``), message ``Connection broken:
ConnectionResetError(104, 'Connection reset by peer')``; a chunked ``read(n)`` loop gets the
body bytes up to the cut first. ``download_file`` (s3transfer) retries each cut and ends in
``boto3.exceptions.RetriesExceededError``. A small response, e.g. ``list_objects_v2``,
passes with the cut set. A raw socket through the proxy receives exactly ``cut_after``
bytes, then ``ConnectionResetError``.
"""

from __future__ import annotations

import contextlib
import fcntl
import selectors
import socket
import struct
import termios
import threading
import time
from types import TracebackType

#: How often blocked threads look at the stop flag.
_POLL_S = 0.1
_CHUNK = 64 * 1024
#: How long a cut waits for the bytes it forwarded to leave the send queue before the reset
#: (a reset discards what is still queued).
_DRAIN_S = 5.0


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP RST instead of a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _unsent(sock: socket.socket) -> int:
    """Bytes still in ``sock``'s send queue (Linux ``SIOCOUTQ``)."""
    buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    return int(struct.unpack("i", buf)[0])


class CutProxy:
    """``with CutProxy((host, port), cut_after=N) as proxy:`` then talk to ``proxy.url``.

    The listening socket is bound in the constructor, so ``url`` is known before the
    proxy starts (e.g. to configure a server process that is started first); connections
    made before ``__enter__`` wait in the backlog. ``__exit__`` resets every open
    connection and joins all threads. ``connections`` and ``cuts`` count accepted
    connections and cuts made, for tests that want evidence of a retry; ``downloaded``
    the bytes that reached clients (evidence that something was *not* fetched)."""

    def __init__(self, upstream: tuple[str, int], cut_after: int | None = None) -> None:
        self.upstream = upstream
        self.cut_after: int | None = cut_after
        self.connections = 0
        self.cuts = 0
        #: Bytes passed upstream -> client over all connections (what a client downloaded).
        self.downloaded = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL_S)
        port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{port}"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="cut-proxy-accept",
                                          daemon=True)

    def __enter__(self) -> CutProxy:
        self._acceptor.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop accepting, reset every open connection, join every thread."""
        self._stop.set()
        if self._acceptor.is_alive():
            self._acceptor.join()
        self._listener.close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,),
                                      name="cut-proxy-conn", daemon=True)
            with self._lock:
                self.connections += 1
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            _reset(client)  # as if the upstream refused
            return
        try:
            self._pipe(client, upstream)
        finally:
            _reset(client)
            _reset(upstream)

    def _pipe(self, client: socket.socket, upstream: socket.socket) -> None:
        """Copy both ways until both sides have finished sending, the proxy stops, or the
        cut; any return resets both sockets (see :meth:`_serve`)."""
        for sock in (client, upstream):
            sock.settimeout(_DRAIN_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = {client: upstream, upstream: client}
        open_reads = {client, upstream}
        forwarded = 0  # upstream -> client
        with selectors.DefaultSelector() as sel:
            for sock in open_reads:
                sel.register(sock, selectors.EVENT_READ)
            while open_reads and not self._stop.is_set():
                for key, _ in sel.select(_POLL_S):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    dst = peer[src]
                    try:
                        data = src.recv(_CHUNK)
                    except OSError:
                        return  # reset by a peer: pass the reset on
                    if not data:  # a clean half-close: pass it on
                        sel.unregister(src)
                        open_reads.discard(src)
                        with contextlib.suppress(OSError):
                            dst.shutdown(socket.SHUT_WR)
                        continue
                    if src is upstream:
                        cut = self.cut_after
                        if cut is not None and forwarded + len(data) > cut:
                            self._cut(client, data[:max(cut - forwarded, 0)])
                            return
                        forwarded += len(data)
                        with self._lock:
                            self.downloaded += len(data)
                    try:
                        dst.sendall(data)
                    except OSError:
                        return

    def _cut(self, client: socket.socket, last: bytes) -> None:
        """Send ``last`` (what is left of the allowance), let it drain, count the cut; the
        caller's reset does the rest."""
        with self._lock:
            self.cuts += 1
        try:
            if last:
                client.sendall(last)
            deadline = time.monotonic() + _DRAIN_S
            while _unsent(client) and time.monotonic() < deadline:
                time.sleep(0.01)
        except OSError:
            pass
