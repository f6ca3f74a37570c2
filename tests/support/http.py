"""Assertions and waits shared by the HTTP tests."""

from __future__ import annotations

import asyncio

import httpx


def assert_openai_error(resp: httpx.Response, status: int, code: str | None = None) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code


async def wait_ready(client: httpx.AsyncClient) -> None:
    for _ in range(500):
        if (await client.get("/ready")).status_code == 200:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("app never became ready")
