"""HTTP layer against the fake engine: schemas, errors, streaming framing, routing."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from hotswap.server.engine.fake import FakeEngine
from support.http import assert_openai_error

BASE = "fake-base"


def chat_body(model: str = BASE, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Say hi"}], **extra}


def expected_chat_answer(engine: FakeEngine, adapter: str | None, content: str = "Say hi") -> str:
    ids = engine.tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True
    )
    spec = None
    if adapter:
        spec = next(a for a in engine.loaded.values() if a.name == adapter)
    return engine.answer(ids, spec)


def sse_events(text: str) -> list[Any]:
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        payload = block[len("data: "):]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


# --- models ----------------------------------------------------------------


async def test_models_lists_base_and_adapters_with_parent(client: httpx.AsyncClient) -> None:
    resp = await client.get("/v1/models")
    assert resp.status_code == 200
    data = {m["id"]: m for m in resp.json()["data"]}
    assert set(data) == {BASE, "sql-writer", "extract"}
    assert data[BASE]["parent"] is None
    assert data["sql-writer"]["parent"] == BASE
    assert data["extract"]["kind"] == "lora"


# --- chat ------------------------------------------------------------------


async def test_chat_routes_base_and_adapter(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    for model, adapter in ((BASE, None), ("sql-writer", "sql-writer"), ("extract", "extract")):
        resp = await client.post("/v1/chat/completions", json=chat_body(model, max_tokens=100))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["object"] == "chat.completion"
        assert body["model"] == model
        answer = expected_chat_answer(fake_engine, adapter)
        assert body["choices"][0]["message"] == {"role": "assistant", "content": answer}
        assert body["choices"][0]["finish_reason"] == "stop"
        prompt_len = len(fake_engine.tokenizer.apply_chat_template(
            [{"role": "user", "content": "Say hi"}], add_generation_prompt=True))
        assert body["usage"] == {
            "prompt_tokens": prompt_len,
            "completion_tokens": len(answer),
            "total_tokens": prompt_len + len(answer),
        }


async def test_chat_max_tokens_and_max_completion_tokens(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/chat/completions", json=chat_body(max_tokens=5))
    choice = resp.json()["choices"][0]
    assert len(choice["message"]["content"]) == 5
    assert choice["finish_reason"] == "length"
    # max_completion_tokens wins over the deprecated max_tokens, as in OpenAI's API.
    resp = await client.post(
        "/v1/chat/completions", json=chat_body(max_tokens=50, max_completion_tokens=3)
    )
    assert resp.json()["usage"]["completion_tokens"] == 3


async def test_chat_stop_string(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/chat/completions", json=chat_body(stop=["answers"]))
    choice = resp.json()["choices"][0]
    assert choice["message"]["content"] == "fake-base "
    assert choice["finish_reason"] == "stop"


async def test_chat_greedy_n_gives_identical_choices(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/chat/completions", json=chat_body(n=3, temperature=0))
    choices = resp.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert len({c["message"]["content"] for c in choices}) == 1
    one = len(choices[0]["message"]["content"])
    assert resp.json()["usage"]["completion_tokens"] == 3 * one


async def test_chat_logprobs(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/v1/chat/completions", json=chat_body(logprobs=True, top_logprobs=2, max_tokens=4)
    )
    content = resp.json()["choices"][0]["logprobs"]["content"]
    assert len(content) == 4
    assert content[0]["token"] == "f" and content[0]["logprob"] == -0.25
    assert content[0]["bytes"] == [ord("f")]
    assert [t["token"] for t in content[0]["top_logprobs"]] == ["f", "?"]


async def test_chat_content_parts_are_joined(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    body = {"model": BASE, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Say "}, {"type": "text", "text": "hi"}]}]}
    resp = await client.post("/v1/chat/completions", json=body)
    assert resp.json()["choices"][0]["message"]["content"] == expected_chat_answer(
        fake_engine, None)


async def test_chat_streaming_framing(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    resp = await client.post(
        "/v1/chat/completions",
        json=chat_body(stream=True, stream_options={"include_usage": True}),
    )
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == expected_chat_answer(fake_engine, None)
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] == "stop"
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == len(text)


# --- completions -----------------------------------------------------------


async def test_completion_batch_of_prompts_with_n(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/completions", json={
        "model": "extract", "prompt": ["first prompt", "second prompt"], "n": 2,
        "temperature": 0.7, "max_tokens": 64,
    })
    body = resp.json()
    assert body["object"] == "text_completion"
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert body["choices"][0]["text"].endswith("first prompt")
    assert body["choices"][2]["text"].endswith("econd prompt")
    # Each prompt counted once, every choice's tokens counted.
    assert body["usage"]["prompt_tokens"] == len("first prompt") + len("second prompt")
    assert body["usage"]["completion_tokens"] == sum(len(c["text"]) for c in body["choices"])


async def test_completion_token_prompt_and_echo(client: httpx.AsyncClient) -> None:
    ids = [ord(c) for c in "hello"]
    resp = await client.post("/v1/completions", json={
        "model": BASE, "prompt": ids, "echo": True, "max_tokens": 3})
    assert resp.json()["choices"][0]["text"] == "hellofak"


async def test_completion_logprobs_offsets(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/completions", json={
        "model": BASE, "prompt": "x", "max_tokens": 3, "logprobs": 1})
    lp = resp.json()["choices"][0]["logprobs"]
    assert lp["tokens"] == ["f", "a", "k"]
    assert lp["text_offset"] == [0, 1, 2]
    assert lp["top_logprobs"][0] == {"f": -0.25}


async def test_completion_streaming_with_usage(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/completions", json={
        "model": BASE, "prompt": "abc", "max_tokens": 6, "stream": True,
        "stream_options": {"include_usage": True}})
    events = sse_events(resp.text)
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["text"] for e in events[:-1] if e["choices"])
    assert text == "fake-b"
    assert events[-2]["usage"] == {"prompt_tokens": 3, "completion_tokens": 6,
                                   "total_tokens": 9}


# --- the official client ---------------------------------------------------


async def test_official_openai_client(client: httpx.AsyncClient, fake_engine: FakeEngine) -> None:
    oai = openai.AsyncOpenAI(base_url="http://test/v1", api_key="unused", http_client=client)
    models = await oai.models.list()
    assert {m.id for m in models.data} == {BASE, "sql-writer", "extract"}
    chat = await oai.chat.completions.create(
        model="sql-writer", messages=[{"role": "user", "content": "Say hi"}])
    assert chat.choices[0].message.content == expected_chat_answer(fake_engine, "sql-writer")
    stream = await oai.chat.completions.create(
        model=BASE, messages=[{"role": "user", "content": "Say hi"}], stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == expected_chat_answer(fake_engine, None)
    with pytest.raises(openai.NotFoundError) as err:
        await oai.completions.create(model="nope", prompt="x")
    assert err.value.code == "model_not_found"


# --- errors ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_unknown_model_is_404(client: httpx.AsyncClient, path: str) -> None:
    body = chat_body("no-such-adapter") if "chat" in path else {
        "model": "no-such-adapter", "prompt": "x"}
    resp = await client.post(path, json=body)
    assert_openai_error(resp, 404, "model_not_found")
    assert resp.json()["error"]["param"] == "model"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat_body(temperature=5), "temperature"),
        (chat_body(n=0), "n"),
        (chat_body(max_tokens=0), "max_tokens"),
        ({"model": BASE, "messages": []}, "messages"),
        ({"model": BASE}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": BASE, "messages": [{"role": "wizard", "content": "x"}]}, None),
        (chat_body(tools=[{"type": "function", "function": {"name": "f"}}]), "tool_choice"),
        (chat_body(response_format={"type": "json_schema"}), "response_format"),
        (chat_body(top_logprobs=2), "top_logprobs"),
        (chat_body(max_tokens=10_000), "max_tokens"),
        (chat_body(seed=2**64), "seed"),
        (chat_body(seed=-(2**63) - 1), "seed"),
        ({"model": BASE, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://x"}}]}]}, None),
    ],
)
async def test_bad_chat_requests_are_400(
    client: httpx.AsyncClient, body: dict[str, Any], param: str | None
) -> None:
    resp = await client.post("/v1/chat/completions", json=body)
    assert_openai_error(resp, 400)
    if param is not None:
        assert resp.json()["error"]["param"].startswith(param)


@pytest.mark.parametrize(
    "body",
    [
        {"model": BASE, "prompt": ""},
        {"model": BASE, "prompt": []},
        {"model": BASE, "prompt": [-1, 5]},
        {"model": BASE, "prompt": [0x110000]},
        {"model": BASE, "prompt": "x", "suffix": "y"},
        {"model": BASE, "prompt": "x", "best_of": 3},
        {"model": BASE, "prompt": "x", "echo": True, "logprobs": 1},
        {"model": BASE, "prompt": "x", "logprobs": 21},
        {"model": BASE, "prompt": "x" * 600},
        {"model": BASE, "prompt": "x", "seed": 2**63},
    ],
)
async def test_bad_completion_requests_are_400(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    assert_openai_error(await client.post("/v1/completions", json=body), 400)


async def test_context_length_error_code(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/completions", json={
        "model": BASE, "prompt": "x" * 500, "max_tokens": 100})
    assert_openai_error(resp, 400, "context_length_exceeded")


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/chat/completions", content=b"{not json",
                             headers={"content-type": "application/json"})
    assert_openai_error(resp, 400)


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    assert_openai_error(await client.get("/v1/nothing-here"), 404)
    assert_openai_error(await client.get("/v1/chat/completions"), 405)


async def test_health_and_ready(client: httpx.AsyncClient, fake_engine: FakeEngine) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    assert (await client.get("/ready")).status_code == 200
    fake_engine.healthy = False
    assert (await client.get("/health")).status_code == 503


async def test_openapi_documents_endpoints(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health",
            "/ready"} <= set(paths)
