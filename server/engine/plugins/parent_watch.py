"""vLLM general plugin: the engine's processes end when the hotswap server process does.

vLLM's engine core runs in a process of its own and does not watch the process that
started it (its workers watch the engine core, through a pipe). A server killed with
SIGKILL, or by the OOM killer, would leave the engine core and its workers running,
holding the model weights and the KV cache; on a GPU, the very memory a restarted server
needs. hotswap puts its own pid in ``HOTSWAP_SERVER_PID`` before starting the engine;
in every process vLLM loads plugins into, this starts a daemon thread that ends the
process once that server process is gone (exited, a zombie, or its pid reused).
"""

from __future__ import annotations

import logging
import os
import threading
import time

import psutil

logger = logging.getLogger(__name__)

ENV = "HOTSWAP_SERVER_PID"
POLL_S = 1.0
_started = False
_fork_hook = False


def mark_server_process() -> None:
    """Called by the server before it starts the engine. Spawned children inherit the pid
    and run :func:`register` as a vLLM plugin; forked children (vLLM's default start method
    off CPU) do not run plugins again, so the fork hook starts their watch instead."""
    os.environ[ENV] = str(os.getpid())
    global _fork_hook
    if not _fork_hook:
        _fork_hook = True
        os.register_at_fork(after_in_child=_after_fork)


def register() -> None:
    """vLLM general-plugin entry point; a no-op outside processes hotswap started."""
    raw = os.environ.get(ENV, "")
    if _started or not raw.isdigit() or int(raw) == os.getpid():
        return  # not under hotswap, already watching, or the server itself
    _start(int(raw))


def _after_fork() -> None:
    global _started
    _started = False  # the parent's watch thread (if any) did not survive the fork
    raw = os.environ.get(ENV, "")
    if raw.isdigit() and int(raw) != os.getpid():
        _start(int(raw))


def _start(pid: int) -> None:
    global _started
    try:
        born = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        born = None
    _started = True
    threading.Thread(target=_watch, args=(pid, born), name="hotswap-server-watch",
                     daemon=True).start()


def _watch(pid: int, born: float | None) -> None:
    while _alive(pid, born):
        time.sleep(POLL_S)
    logger.error("hotswap server process %d is gone; ending engine process %d", pid,
                 os.getpid())
    os._exit(1)  # no cleanup to wait for: the server that would use this engine is gone


def _alive(pid: int, born: float | None) -> bool:
    try:
        proc = psutil.Process(pid)
        same = proc.create_time() == born  # else the pid was reused by another process
        return bool(same and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # someone else's process cannot be ours; keep running, to be safe
