"""Start a real ``hotswap serve`` process and wait until it is ready."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

START_TIMEOUT_S = 420


@dataclass(frozen=True)
class ServerInfo:
    url: str
    base_name: str
    adapters: dict[str, Path]
    log_path: Path
    #: The server's --store and (first) --import-root, when the test gave them.
    store: Path | None = None
    import_root: Path | None = None
    #: The ``hotswap serve`` process (tests that kill the server need it).
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)
    #: The server's admin key, when it requires keys.
    api_key: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        """What every request to this server carries."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(args: list[str], log_path: Path, base_name: str,
                   adapters: dict[str, Path], *, store: Path | None = None,
                   import_root: Path | None = None, api_key: str | None = None
                   ) -> Iterator[ServerInfo]:
    """Run ``hotswap serve ARGS --port <free>`` until the block ends (``store``,
    ``import_root`` and ``api_key``, if given, are passed as --store / --import-root /
    --admin-key)."""
    if api_key is not None:
        args = [*args, "--admin-key", api_key]
    if store is not None:
        args = [*args, "--store", str(store)]
    if import_root is not None:
        args = [*args, "--import-root", str(import_root)]
    port = free_port()
    hotswap = Path(sys.executable).parent / "hotswap"
    cmd = [str(hotswap), "serve", *args, "--port", str(port)]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited ({proc.returncode}):\n{tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready in {START_TIMEOUT_S}s:\n{tail(log_path)}")
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        yield ServerInfo(url=url, base_name=base_name, adapters=adapters, log_path=log_path,
                         store=store, import_root=import_root, process=proc,
                         api_key=api_key)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def running_servers(contexts: list[AbstractContextManager[ServerInfo]]
                    ) -> Iterator[list[ServerInfo]]:
    """Start the ``running_server`` contexts at once (engines load in parallel); if one
    fails to start, the others are still stopped."""
    with ExitStack() as stack, ThreadPoolExecutor(len(contexts)) as pool:
        started = [pool.submit(cm.__enter__) for cm in contexts]
        servers: list[ServerInfo] = []
        failure: BaseException | None = None
        for cm, future in zip(contexts, started, strict=True):
            try:
                servers.append(future.result())
                stack.push(cm.__exit__)
            except BaseException as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        yield servers


def tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
