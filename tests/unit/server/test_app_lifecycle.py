"""Start-up states, and aborting the engine request when a streaming client goes away."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from hotswap.server.engine.fake import FakeEngine
from support.app import in_process, make_app, on_socket
from support.fakes import make_adapter_dir
from support.metrics import sample


async def test_inference_is_503_until_engine_is_up(tmp_path: Path) -> None:
    gate = asyncio.Event()
    engine = FakeEngine()

    async def slow_factory() -> FakeEngine:
        await gate.wait()
        return engine

    async with in_process(make_app(tmp_path, factory=slow_factory), ready=False) as c:
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

    async with in_process(make_app(tmp_path, adapters=[("broken", bad)]), ready=False) as c:
        for _ in range(100):
            if (await c.get("/health")).status_code == 503:
                break
            await asyncio.sleep(0.01)
        health = await c.get("/health")
        assert health.status_code == 503
        # Which kind of failure, for anyone; the reason (maybe naming paths) is logged.
        error = health.json()["error"]
        assert "invalid_adapter_config" in error and str(tmp_path) not in error
        resp = await c.post("/v1/completions", json={"model": "fake-base", "prompt": "x"})
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "engine_unavailable"


async def test_client_disconnect_aborts_engine_request(tmp_path: Path) -> None:
    # A real socket is needed: in-process transports do not report a disconnect.
    engine = FakeEngine()
    engine.step_delay = 0.02

    app = make_app(tmp_path, engine, adapters=[("a", make_adapter_dir(tmp_path, "a"))])
    async with on_socket(app) as url:
        async with httpx.AsyncClient(base_url=url) as c:
            body = {"model": "a", "prompt": "x", "max_tokens": 400, "ignore_eos": True,
                    "stream": True}
            async with c.stream("POST", "/v1/completions", json=body) as resp:
                assert resp.status_code == 200
                seen = 0
                async for line in resp.aiter_lines():
                    seen += line.startswith("data: ")
                    if seen == 3:
                        # Scraped while still reading: leaving the loop is what hangs up.
                        metrics = (await c.get("/metrics")).text
                        break
                assert sample(metrics, "hotswap_engine_requests_in_flight", adapter="a") == 1
        for _ in range(100):
            if engine.aborted:
                break
            await asyncio.sleep(0.02)
        assert len(engine.aborted) == 1
        assert engine.finished == []
        async with httpx.AsyncClient(base_url=url) as c:
            metrics = (await c.get("/metrics")).text
        assert sample(metrics, "hotswap_engine_requests_in_flight", adapter="a") == 0
        assert sample(metrics, "hotswap_engine_requests_total", adapter="a", type="lora",
                      outcome="aborted") == 1
