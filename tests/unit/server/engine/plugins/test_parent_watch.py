"""The vLLM plugin that ends engine processes with the hotswap server
(plugins/parent_watch.py), on real processes: a stand-in server starts a child that
registers the plugin, the server is SIGKILLed, and the child must end on its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

CHILD = ("from hotswap.server.engine.plugins.parent_watch import register; register(); "
         "import time; time.sleep(120)")


def start_server_with_child(watch: bool) -> tuple[subprocess.Popen[str], psutil.Process]:
    env_line = "env['HOTSWAP_SERVER_PID'] = str(os.getpid())" if watch else "pass"
    server = subprocess.Popen([sys.executable, "-c", (
        "import os, subprocess, sys, time\n"
        "env = dict(os.environ)\n"
        f"{env_line}\n"
        f"child = subprocess.Popen([sys.executable, '-c', {CHILD!r}], env=env)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n")], stdout=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if k != "HOTSWAP_SERVER_PID"})
    assert server.stdout is not None
    return server, psutil.Process(int(server.stdout.readline()))


@pytest.mark.parametrize("watch", [True, False])
def test_engine_process_ends_with_a_killed_server(watch: bool) -> None:
    server, child = start_server_with_child(watch)
    try:
        psutil.wait_procs([child], timeout=2)  # let it import and register
        assert child.is_running()
        os.kill(server.pid, signal.SIGKILL)
        # Not reaped yet: the dead server is a zombie, which must count as gone.
        gone, _ = psutil.wait_procs([child], timeout=5)
        # With the plugin armed the child ends by itself; without it, it would linger.
        assert (gone != []) is watch
    finally:
        if child.is_running():
            child.kill()
        server.kill()
        server.wait()


def test_forked_engine_process_ends_with_a_killed_server() -> None:
    # vLLM's default off CPU: the engine core is forked and does not run plugins again.
    server = subprocess.Popen([sys.executable, "-c", (
        "import os, time\n"
        "from hotswap.server.engine.plugins.parent_watch import mark_server_process\n"
        "mark_server_process()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    time.sleep(120)\n"
        "    os._exit(0)\n"
        "print(pid, flush=True)\n"
        "time.sleep(120)\n")], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    child = psutil.Process(int(server.stdout.readline()))
    try:
        os.kill(server.pid, signal.SIGKILL)
        gone, _ = psutil.wait_procs([child], timeout=5)
        assert gone, "the forked child outlived the server"
    finally:
        if child.is_running():
            child.kill()
        server.wait()


def test_register_in_the_server_itself_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from hotswap.server.engine.plugins import parent_watch

    monkeypatch.setenv(parent_watch.ENV, str(os.getpid()))
    monkeypatch.setattr(parent_watch, "_started", False)
    parent_watch.register()
    assert parent_watch._started is False
