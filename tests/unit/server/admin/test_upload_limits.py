"""Uploads can't hold the server: stalled bodies time out without holding a worker
thread, uploads at once are capped, and the store has a byte budget."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
from support.app import app_client
from support.fakes import make_adapter_dir, service_options, tar_gz
from support.http import assert_openai_error

ARCHIVE = {"Content-Type": "application/octet-stream"}


def stalled(first: bytes, release: asyncio.Event) -> AsyncIterator[bytes]:
    async def body() -> AsyncIterator[bytes]:
        yield first
        await release.wait()

    return body()


async def test_stalled_uploads_time_out_and_hold_no_thread(tmp_path: Path) -> None:
    # More stalled uploads than anyio's worker threads (40): with a thread held per
    # waiting upload, /health would starve (as it did).
    options = replace(service_options(tmp_path), max_uploads=64, upload_idle_timeout_s=2.0)
    release = asyncio.Event()
    data = tar_gz(make_adapter_dir(tmp_path / "s", "x"))
    async with app_client(tmp_path, options=options) as c:
        uploads = [asyncio.create_task(c.post(
            "/v1/adapters", params={"name": f"u{i}"}, headers=ARCHIVE,
            content=stalled(data[:100], release))) for i in range(48)]
        await asyncio.sleep(0.3)
        started = time.monotonic()
        assert (await c.get("/health")).status_code == 200
        assert (await c.get("/v1/models")).status_code == 200
        assert time.monotonic() - started < 1.0
        results = await asyncio.gather(*uploads)
        release.set()
        for resp in results:
            assert_openai_error(resp, 408, "upload_incomplete")
        assert (await c.get("/v1/adapters")).json()["data"] == []


async def test_uploads_at_once_are_capped(tmp_path: Path) -> None:
    options = replace(service_options(tmp_path), max_uploads=2, upload_idle_timeout_s=30)
    release = asyncio.Event()
    data = tar_gz(make_adapter_dir(tmp_path / "s", "x"))
    async with app_client(tmp_path, options=options) as c:
        busy = [asyncio.create_task(c.post(
            "/v1/adapters", params={"name": f"u{i}"}, headers=ARCHIVE,
            content=stalled(data, release))) for i in range(2)]
        await asyncio.sleep(0.3)
        third = await c.post("/v1/adapters", params={"name": "u3"}, headers=ARCHIVE,
                             content=data)
        assert_openai_error(third, 429, "too_many_uploads")
        assert third.headers["retry-after"] == "1"
        release.set()
        assert [r.status_code for r in await asyncio.gather(*busy)] == [201, 201]
        ok = await c.post("/v1/adapters", params={"name": "u3"}, headers=ARCHIVE,
                          content=data)
        assert ok.status_code == 201, ok.text


async def test_store_byte_budget(tmp_path: Path) -> None:
    one = tar_gz(make_adapter_dir(tmp_path / "s", "a", seed=1))
    size = sum(p.stat().st_size for p in (tmp_path / "s" / "a").iterdir())
    options = replace(service_options(tmp_path), store_max_bytes=int(size * 1.5))
    async with app_client(tmp_path, options=options) as c:
        first = await c.post("/v1/adapters", params={"name": "a"}, headers=ARCHIVE,
                             content=one)
        assert first.status_code == 201, first.text
        two = tar_gz(make_adapter_dir(tmp_path / "s", "b", seed=2))
        resp = await c.post("/v1/adapters", params={"name": "b"}, headers=ARCHIVE,
                            content=two)
        assert_openai_error(resp, 507, "store_full")
        assert_openai_error(await c.get("/v1/adapters/b"), 404)


async def test_client_gone_mid_upload_stores_nothing(tmp_path: Path) -> None:
    data = tar_gz(make_adapter_dir(tmp_path / "s", "x"))

    async def broken() -> AsyncIterator[bytes]:
        yield data[: len(data) // 2]
        raise httpx.ReadError("client went away")

    async with app_client(tmp_path) as c:
        with contextlib.suppress(httpx.ReadError):
            await c.post("/v1/adapters", params={"name": "x"}, headers=ARCHIVE,
                         content=broken())
        assert_openai_error(await c.get("/v1/adapters/x"), 404)
        assert list((tmp_path / "store" / "tmp").iterdir()) == []
