"""Start-up states, and aborting the engine request when a streaming client goes away."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import uvicorn
from asgi_lifespan import LifespanManager
from hotswap.server.app import create_app
from hotswap.server.engine.fake import FakeEngine
from support.fakes import make_adapter_dir, service_options


async def test_inference_is_503_until_engine_is_up(tmp_path: Path) -> None:
    gate = asyncio.Event()
    engine = FakeEngine()

    async def slow_factory() -> FakeEngine:
        await gate.wait()
        return engine

    app = create_app(slow_factory, service_options(tmp_path))
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as c:
        assert (await c.get("/health")).json() == {"status": "starting"}
        assert (await c.get("/ready")).status_code == 503
        resp = await c.post("/v1/completions", json={"model": "fake-base", "prompt": "x"})
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "not_ready"
        gate.set()
        for _ in range(100):
            if (await c.get("/ready")).status_code == 200:
                break
            await asyncio.sleep(0.01)
        resp = await c.post("/v1/completions", json={"model": "fake-base", "prompt": "x"})
        assert resp.status_code == 200


async def test_failed_startup_is_reported(tmp_path: Path) -> None:
    # An adapter dir without adapter_config.json: admission refuses it at start.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_model.safetensors").write_bytes(b"")

    async def factory() -> FakeEngine:
        return FakeEngine()

    app = create_app(factory, service_options(tmp_path), [("broken", bad)])
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as c:
        for _ in range(100):
            if (await c.get("/health")).status_code == 503:
                break
            await asyncio.sleep(0.01)
        health = await c.get("/health")
        assert health.status_code == 503
        assert "adapter_config.json" in health.json()["error"]
        resp = await c.post("/v1/completions", json={"model": "fake-base", "prompt": "x"})
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "engine_unavailable"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_client_disconnect_aborts_engine_request(tmp_path: Path) -> None:
    # A real socket is needed: in-process transports do not report a disconnect.
    engine = FakeEngine()
    engine.step_delay = 0.02

    async def factory() -> FakeEngine:
        return engine

    app = create_app(factory, service_options(tmp_path), [("a", make_adapter_dir(tmp_path, "a"))])
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            for _ in range(200):
                try:
                    if (await c.get("/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.02)
            body = {"model": "a", "prompt": "x", "max_tokens": 400, "ignore_eos": True,
                    "stream": True}
            async with c.stream("POST", "/v1/completions", json=body) as resp:
                assert resp.status_code == 200
                seen = 0
                async for line in resp.aiter_lines():
                    seen += line.startswith("data: ")
                    if seen == 3:
                        break
                metrics = (await c.get("/metrics")).text
                assert 'hotswap_engine_requests_in_flight{model="a"} 1.0' in metrics
        for _ in range(100):
            if engine.aborted:
                break
            await asyncio.sleep(0.02)
        assert len(engine.aborted) == 1
        assert engine.finished == []
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            metrics = (await c.get("/metrics")).text
        assert 'hotswap_engine_requests_in_flight{model="a"} 0.0' in metrics
        assert 'hotswap_engine_requests_total{model="a",outcome="aborted"} 1.0' in metrics
    finally:
        server.should_exit = True
        await serving
