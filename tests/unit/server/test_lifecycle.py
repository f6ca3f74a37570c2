"""How the process ends, on a real process (the fake engine behind it): SIGTERM drains
(readiness 503 at once, new requests 503, in-flight requests finish, exit 0 within
--drain-timeout) and a dead engine makes the process exit 1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from hotswap.server.engine.fake import FakeEngine
from support.app import in_process, make_app
from support.http import assert_openai_error
from support.server import free_port, tail

TESTS = Path(__file__).resolve().parents[2]


@contextmanager
def fake_server(tmp_path: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "support.fake_server", "--port", str(port),
             "--store", str(tmp_path / "store"), *args],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, tail(log)
            assert time.monotonic() < deadline, tail(log)
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _stream_request(max_tokens: int) -> dict[str, object]:
    return {"model": "fake-base", "prompt": "hello", "max_tokens": max_tokens,
            "ignore_eos": True, "stream": True}


def test_sigterm_drains_in_flight_requests_and_refuses_new_ones(tmp_path: Path) -> None:
    # 60 tokens at 30 ms each: the stream is still running well after the SIGTERM.
    with fake_server(tmp_path, "--step-delay", "0.03", "--drain-timeout", "30") as (url,
                                                                                    proc):
        with httpx.Client(base_url=url, timeout=30) as client, client.stream(
                "POST", "/v1/completions", json=_stream_request(60)) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            proc.send_signal(signal.SIGTERM)
            # The flag is set in the signal handler: the very next request sees it.
            with httpx.Client(base_url=url, timeout=10) as other:
                for _ in range(100):
                    ready = other.get("/ready")
                    if ready.status_code == 503:
                        break
                    time.sleep(0.01)
                assert ready.status_code == 503 and ready.json()["status"] == "draining"
                refused = other.post("/v1/completions", json={"model": "fake-base",
                                                              "prompt": "hi"})
                assert_openai_error(refused, 503, "draining")
                assert refused.headers["retry-after"] == "1"
                assert other.get("/health").status_code == 200  # alive while draining
            rest = [first, *(line for line in lines if line.startswith("data: "))]
        assert rest[-1] == "data: [DONE]"
        text = "".join(json.loads(line[6:])["choices"][0]["text"] for line in rest[:-1]
                       if json.loads(line[6:])["choices"])
        assert len(text) == 60, "the in-flight stream was cut"
        assert proc.wait(timeout=15) == 0, tail(tmp_path / "server.log")


def test_drain_timeout_bounds_the_exit(tmp_path: Path) -> None:
    # A 400-token stream (~20 s) outlives a 1 s drain: the process exits anyway.
    log = tmp_path / "server.log"
    with fake_server(tmp_path, "--step-delay", "0.05", "--drain-timeout", "1") as (url,
                                                                                   proc):
        with httpx.Client(base_url=url, timeout=30) as client, client.stream(
                "POST", "/v1/completions", json=_stream_request(400)) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            next(line for line in lines if line.startswith("data: "))
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                rest = [line for line in lines if line.startswith("data: ")]
            except httpx.HTTPError:
                rest = []  # cut off mid-stream, as it should be
            assert "data: [DONE]" not in rest, tail(log)
        assert proc.wait(timeout=30) == 0, tail(log)
    # The stream alone would take ~20 s more; the drain gave it 1 s (+ uvicorn's 2 s).
    assert time.monotonic() - signalled < 15, tail(log)
    assert "drain timeout" in log.read_text()


async def test_dead_engine_turns_probes_503_and_asks_to_exit(tmp_path: Path) -> None:
    engine = FakeEngine()
    app = make_app(tmp_path, engine)
    reasons: list[str] = []
    app.state.hotswap.on_fatal = reasons.append
    async with in_process(app) as client:
        engine.healthy = False
        for _ in range(300):  # the watcher looks every second
            if reasons:
                break
            await asyncio.sleep(0.01)
        assert reasons and "the engine died" in reasons[0]
        health = await client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "dead"
        ready = await client.get("/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "dead"


def test_dead_engine_exits_nonzero(tmp_path: Path) -> None:
    with fake_server(tmp_path, "--die-after", "1.5") as (_, proc):
        code = proc.wait(timeout=20)
    log = (tmp_path / "server.log").read_text()
    assert code == 1, log
    assert "the engine died" in log
