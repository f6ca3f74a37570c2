"""Bounded work per request (HTTP layer, fake engine): body size and idle time before
any route, prompts / choices / prompt tokens per request, the default max_tokens, stop
strings; and backpressure: sequences in flight, server-wide and per key, 429 at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hotswap.server.auth import KeyRing, Security
from hotswap.server.engine.fake import FakeEngine
from hotswap.server.limits import RequestLimits
from support.app import in_process, make_app, on_socket
from support.fakes import make_adapter_dir, tar_gz
from support.http import assert_openai_error

LIMITS = RequestLimits(max_body_bytes=32768, body_idle_timeout_s=0.5, max_prompts=4,
                       max_prompt_tokens=200, max_choices=6, default_max_tokens=7,
                       max_in_flight=8)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(make_app(tmp_path, limits=LIMITS)) as c:
        yield c


def completion(**fields: Any) -> dict[str, Any]:
    return {"model": "fake-base", "prompt": "hi", **fields}


async def test_body_over_the_cap_is_413_before_parsing(client: httpx.AsyncClient) -> None:
    big = completion(prompt="x" * 40_000)
    assert_openai_error(await client.post("/v1/completions", json=big), 413,
                        "request_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        yield b'{"model": "fake-base", "prompt": "'
        for _ in range(40):
            yield b"x" * 1000
        yield b'"}'

    resp = await client.post("/v1/completions", content=chunks(),
                             headers={"content-type": "application/json"})
    assert_openai_error(resp, 413, "request_too_large")
    # Every route, not only inference: the admin JSON routes too.
    resp = await client.put("/v1/adapters/a/tags/b", json={"version": "x" * 40_000})
    assert_openai_error(resp, 413, "request_too_large")
    # Under the cap, the same route works.
    ok = await client.post("/v1/completions", json=completion(prompt="x" * 100))
    assert ok.status_code == 200, ok.text


async def test_upload_is_not_capped_by_the_json_body_limit(tmp_path: Path) -> None:
    archive = tar_gz(make_adapter_dir(tmp_path, "big"))
    limits = RequestLimits(max_body_bytes=4096)
    assert len(archive) > limits.max_body_bytes
    async with in_process(make_app(tmp_path, limits=limits)) as client:
        resp = await client.post("/v1/adapters", params={"name": "big"}, content=archive,
                                 headers={"content-type": "application/gzip"})
    assert resp.status_code == 201, resp.text


async def test_a_body_that_stops_arriving_is_408(tmp_path: Path) -> None:
    async with on_socket(make_app(tmp_path, limits=LIMITS)) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"mo")
        await writer.drain()
        head = await asyncio.wait_for(reader.readline(), 10)  # 0.5 s idle timeout
        writer.close()
        assert head.startswith(b"HTTP/1.1 408"), head


@pytest.mark.parametrize(("fields", "param", "words"), [
    ({"prompt": ["a", "b", "c", "d", "e"]}, "prompt", "at most 4 (--max-prompts)"),
    ({"prompt": [[1, 2], [3], [4], [5], [6]]}, "prompt", "at most 4 (--max-prompts)"),
    ({"prompt": [[7]] * 5000}, "prompt", "at most 4096 prompts"),  # before any item
    ({"prompt": [True, 2]}, "prompt", "prompt must be a string"),
    ({"prompt": ["a", "b", "c"], "n": 3}, "n", "at most 6 (--max-choices)"),
    ({"prompt": ["x" * 150, "y" * 150]}, "prompt", "300 tokens; at most 200 per"),
    ({"prompt": [[7] * 150, [8] * 150]}, "prompt", "300 tokens; at most 200 per"),
    ({"stop": "s" * 257}, "stop", "at most 256 characters"),
    ({"stop": [str(i) for i in range(17)]}, "stop", "at most 16 items"),
    ({"logprobs": 21}, "logprobs", "less than or equal to 20"),
    ({"seed": 2**63}, "seed", "less than or equal to"),
])
async def test_work_per_request_is_bounded(client: httpx.AsyncClient, fields: dict[str, Any],
                                           param: str, words: str) -> None:
    resp = await client.post("/v1/completions", json=completion(**fields))
    assert_openai_error(resp, 400)
    error = resp.json()["error"]
    assert (error["param"] or "").startswith(param), error
    assert words in error["message"], error


async def test_chat_messages_are_bounded(tmp_path: Path) -> None:
    messages = [{"role": "user", "content": "a"}] * 2049
    async with in_process(make_app(tmp_path)) as client:  # default limits: a 1 MiB body
        resp = await client.post("/v1/chat/completions",
                                 json={"model": "fake-base", "messages": messages})
    # Over OpenAI's 2048 messages: 400, counted before the messages are validated.
    assert_openai_error(resp, 400)
    assert "at most 2048 messages" in resp.json()["error"]["message"]


async def test_a_prompt_over_the_context_is_refused_as_such(tmp_path: Path) -> None:
    async with in_process(make_app(tmp_path, FakeEngine(max_model_len=64))) as client:
        for path, body in [
            ("/v1/completions", completion(prompt="x" * 100)),
            ("/v1/completions", completion(prompt=[[7] * 3, [7] * 64])),
            ("/v1/chat/completions", {"model": "fake-base",
                                      "messages": [{"role": "user", "content": "x" * 64}]}),
        ]:
            resp = await client.post(path, json=body)
            assert_openai_error(resp, 400, "context_length_exceeded")
            assert "maximum context length is 64 tokens" in resp.json()["error"]["message"]


async def test_default_max_tokens(tmp_path: Path, client: httpx.AsyncClient) -> None:
    plain = await client.post("/v1/completions", json=completion(ignore_eos=True))
    assert plain.json()["usage"]["completion_tokens"] == 7  # --default-max-tokens
    asked = await client.post("/v1/completions", json=completion(ignore_eos=True,
                                                                 max_tokens=20))
    assert asked.json()["usage"]["completion_tokens"] == 20
    # Without a default (0 on the command line), the rest of the context.
    unbounded = RequestLimits(default_max_tokens=None)
    async with in_process(make_app(tmp_path / "b", FakeEngine(max_model_len=64),
                                   limits=unbounded)) as c:
        resp = await c.post("/v1/completions", json=completion(ignore_eos=True))
        assert resp.json()["usage"]["completion_tokens"] == 64 - 2


@contextlib.asynccontextmanager
async def streaming(client: httpx.AsyncClient, headers: dict[str, str] | None = None,
                    **fields: Any) -> AsyncIterator[httpx.Response]:
    """A long stream, held open (its slots taken) until the block ends."""
    body = completion(stream=True, ignore_eos=True, max_tokens=400, **fields)
    async with client.stream("POST", "/v1/completions", json=body, headers=headers) as resp:
        assert resp.status_code == 200, await resp.aread()
        # Kept referenced: a line iterator left to the garbage collector would close the
        # connection (and the server would rightly abort the stream).
        lines = resp.aiter_lines()
        while not (await anext(lines)).startswith("data: "):
            pass
        yield resp


async def test_in_flight_sequences_are_bounded_with_429(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.step_delay = 0.05
    app = make_app(tmp_path, engine, limits=RequestLimits(max_in_flight=4, max_choices=4))
    state = app.state.hotswap
    async with on_socket(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        async with streaming(client, n=3, temperature=1.0):
            assert state.in_flight.total == 3
            full = await client.post("/v1/completions", json=completion(n=2))
            assert_openai_error(full, 429, "rate_limit_exceeded")
            assert full.headers["retry-after"] == "1"
            assert "3 of 4 sequences" in full.json()["error"]["message"]
            fits = await client.post("/v1/completions", json=completion())
            assert fits.status_code == 200, fits.text
            # A refused request (unknown model) gives its slot back.
            missing = await client.post("/v1/completions", json=completion(model="nope"))
            assert_openai_error(missing, 404)
            assert state.in_flight.total == 3
        for _ in range(200):  # the closed stream's slots come back
            if state.in_flight.total == 0:
                break
            await asyncio.sleep(0.01)
        assert state.in_flight.total == 0
        again = await client.post("/v1/completions", json=completion(n=2))
        assert again.status_code == 200, again.text


async def test_one_key_can_not_take_every_slot(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.step_delay = 0.05
    keys = KeyRing.of(["sk-a", "sk-b"], [])
    app = make_app(tmp_path, engine, security=Security(keys=keys),
                   limits=RequestLimits(max_in_flight=4, max_in_flight_per_key=2,
                                        max_choices=2))
    a = {"Authorization": "Bearer sk-a"}
    b = {"Authorization": "Bearer sk-b"}
    async with on_socket(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client, \
            streaming(client, a), streaming(client, a):
        refused = await client.post("/v1/completions", json=completion(), headers=a)
        assert_openai_error(refused, 429, "rate_limit_exceeded")
        assert "this API key" in refused.json()["error"]["message"]
        other = await client.post("/v1/completions", json=completion(), headers=b)
        assert other.status_code == 200, other.text


def test_settings_give_a_per_key_share_only_with_several_keys() -> None:
    from hotswap.server.config import Settings

    settings = Settings(max_in_flight=100)
    assert settings.request_limits(keys=1).max_in_flight_per_key is None
    assert settings.request_limits(keys=2).max_in_flight_per_key == 64  # >= max_choices
    assert Settings(max_in_flight=300).request_limits(keys=3).max_in_flight_per_key == 150
    with pytest.raises(ValueError, match="max_choices must be <= max_in_flight"):
        Settings(max_in_flight=10)
    assert Settings(default_max_tokens=0).request_limits(keys=0).default_max_tokens is None


