"""The real server under hostile and unlucky requests: heavy requests never stall the
others (``/health`` keeps answering within 100 ms), and a client that goes away aborts
its engine request, streaming or not (vLLM's own gauge shows the engine idle)."""

from __future__ import annotations

import gc
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from support.metrics import metric, wait_for
from support.server import ServerInfo

pytestmark = pytest.mark.engine

#: What /health may take while heavy requests run (the issue's bound).
HEALTH_BOUND_S = 0.1
#: How long each kind of heavy request is kept under way (sent again as often as it
#: takes): a fast machine refuses one in a few ms, and a phase that short would overlap
#: no probe and test nothing.
PHASE_S = 0.3


def _refusal_of_64_mib_body(server: ServerInfo) -> int:
    """A 64 MiB chat body, announced and never sent: refused from its Content-Length."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + (server.api_key or "").encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 67108864\r\n\r\n{")
        head = sock.recv(4096).split(b"\r\n", 1)[0]
    return int(head.split()[1])


def _heavy_requests(server: ServerInfo) -> dict[str, Callable[[], int]]:
    def post(path: str, body: dict[str, Any]) -> Callable[[], int]:
        def send() -> int:
            return httpx.post(f"{server.url}{path}", json=body, headers=server.headers,
                              timeout=120).status_code
        return send

    base = server.base_name
    return {
        "64 MiB body": lambda: _refusal_of_64_mib_body(server),
        # 100,000 one-token prompts: refused by --max-prompts once parsed (100,000 lists:
        # a full garbage collection of the start-up heap held the loop 0.6 s before the
        # server froze that heap).
        "100k prompts": post("/v1/completions", {"model": base, "prompt": [[7]] * 100_000}),
        # 64 prompts of 2,000 token ids: over --max-prompt-tokens.
        "64x2000 tokens": post("/v1/completions", {"model": base,
                                                   "prompt": [[7] * 2000] * 64,
                                                   "max_tokens": 1}),
        # ~900 kB of chat text: tokenized (off the loop), then over the context.
        "900 kB chat": post("/v1/chat/completions", {"model": base, "messages": [
            {"role": "user", "content": "lorem ipsum dolor " * 50_000}]}),
    }


def test_health_answers_fast_while_heavy_requests_run(server: ServerInfo) -> None:
    latencies: list[tuple[float, str]] = []
    running = ["warm-up"]
    done = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            client.get("/health")  # connection up before the clock starts
            while not done.is_set():
                during = running[0]
                start = time.perf_counter()
                assert client.get("/health").status_code == 200
                latencies.append((time.perf_counter() - start, during))
                time.sleep(0.01)

    # This process only sends and probes: no collection of its own (torch is loaded
    # here for the PEFT references) may pause the prober and pass for the server's.
    gc.disable()
    prober = threading.Thread(target=probe)
    prober.start()
    took: dict[str, float] = {}
    try:
        assert wait_for(lambda: len(latencies) >= 3, 10)
        for name, request in _heavy_requests(server).items():
            running[0] = name
            start = time.perf_counter()
            sent = 0
            while time.perf_counter() - start < PHASE_S:
                status = request()
                sent += 1
                assert status in (400, 413), (name, status)
            took[name] = round((time.perf_counter() - start) / sent, 3)
        running[0] = "after"
        time.sleep(0.05)
    finally:
        done.set()
        prober.join()
        gc.enable()
    slowest, during = max(latencies)
    worst = {name: round(max(s for s, d in latencies if d == name) * 1000)
             for _, name in latencies}
    assert slowest < HEALTH_BOUND_S, (f"/health took {slowest * 1000:.0f} ms during "
                                      f"{during!r} (slowest ms by phase {worst}; one request "
                                      f"took {took} s)")
    probes = {name: sum(1 for _, d in latencies if d == name) for name in took}
    assert min(probes.values()) >= 3, f"a phase overlapped too few probes: {probes}"
    # ... and the base model answers as usual right after.
    answer = httpx.post(f"{server.url}/v1/completions", headers=server.headers, timeout=60,
                        json={"model": server.base_name, "prompt": "Hi", "max_tokens": 4})
    assert answer.status_code == 200, answer.text


def test_nonstreaming_client_disconnect_aborts_engine_request(server: ServerInfo) -> None:
    def aborted() -> float:
        return metric(server, "hotswap_engine_requests_total", adapter="lora-b",
                      outcome="aborted")

    before = aborted()
    body = {"model": "lora-b", "prompt": "Tell me a long story.", "max_tokens": 1500,
            "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        # Gives up after 2 s and closes the connection, long before 1,500 tokens.
        httpx.post(f"{server.url}/v1/completions", json=body, headers=server.headers,
                   timeout=httpx.Timeout(2.0))
    assert wait_for(lambda: aborted() == before + 1, 10), "the engine request ran on"
    assert wait_for(lambda: metric(server, "vllm:num_requests_running") == 0, 10)
    assert metric(server, "hotswap_engine_requests_in_flight", adapter="lora-b") == 0
