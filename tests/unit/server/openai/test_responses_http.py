"""``POST /v1/responses`` against the fake engine: the Response object, the typed stream
events and their order, the official client's parsing, and every refusal."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from hotswap.server.engine.fake import FakeEngine
from hotswap.server.engine.interface import (
    AdapterSpec,
    EngineError,
    GenerationStep,
    SamplingSpec,
)
from support.app import make_app, on_socket
from support.fakes import make_adapter_dir
from support.http import assert_openai_error

BASE = "fake-base"
STREAM_ORDER_HEAD = ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added"]
STREAM_ORDER_TAIL = ["response.output_text.done", "response.content_part.done",
                     "response.output_item.done"]


def body(model: str = BASE, **extra: Any) -> dict[str, Any]:
    return {"model": model, "input": "Say hi", **extra}


def expected(engine: FakeEngine, messages: list[dict[str, str]], adapter: str | None = None,
             max_tokens: int | None = None) -> str:
    """The fake's answer to ``messages`` through its chat template (as chat sends them)."""
    ids = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    spec = next(a for a in engine.loaded.values() if a.name == adapter) if adapter else None
    answer = engine.answer(ids, spec)
    return answer if max_tokens is None else answer[:max_tokens]


def prompt_len(engine: FakeEngine, messages: list[dict[str, str]]) -> int:
    return len(engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True))


def events_of(text: str) -> list[dict[str, Any]]:
    """Typed SSE: every block is ``event: <type>`` then ``data: <json>`` of that type."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        head, data = block.split("\n")
        assert head.startswith("event: ") and data.startswith("data: "), block
        event = json.loads(data[len("data: "):])
        assert event["type"] == head[len("event: "):]
        events.append(event)
    return events


USER = [{"role": "user", "content": "Say hi"}]


# --- the Response object -----------------------------------------------------------


@pytest.mark.parametrize("model", [BASE, "sql-writer"])
async def test_response_shape_for_base_and_adapter(
    client: httpx.AsyncClient, fake_engine: FakeEngine, model: str
) -> None:
    resp = await client.post("/v1/responses", json=body(model, metadata={"k": "v"},
                                                        user="u1"))
    assert resp.status_code == 200, resp.text
    r = resp.json()
    answer = expected(fake_engine, USER, None if model == BASE else model)
    assert r["id"].startswith("resp_") and r["object"] == "response"
    assert r["status"] == "completed" and r["incomplete_details"] is None
    assert r["model"] == model and isinstance(r["created_at"], int)
    assert r["completed_at"] >= r["created_at"]
    (message,) = r["output"]
    assert message["id"].startswith("msg_") and message["id"][4:] == r["id"][5:]
    assert {k: v for k, v in message.items() if k != "id"} == {
        "type": "message", "role": "assistant", "status": "completed",
        "content": [{"type": "output_text", "text": answer, "annotations": []}]}
    n = prompt_len(fake_engine, USER)
    assert r["usage"] == {
        "input_tokens": n, "output_tokens": len(answer), "total_tokens": n + len(answer),
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0}}
    # The settings it was made with, echoed (and nothing kept).
    assert r["store"] is False and r["previous_response_id"] is None
    assert r["tools"] == [] and r["tool_choice"] == "auto"
    assert r["temperature"] == 1.0 and r["top_p"] == 1.0 and r["max_output_tokens"] is None
    assert r["text"] == {"format": {"type": "text"}}
    assert r["metadata"] == {"k": "v"} and r["user"] == "u1"
    assert r["error"] is None and r["instructions"] is None


async def test_instructions_and_message_items_go_through_the_chat_template(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    items = [
        {"role": "developer", "content": "Be terse."},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "Say "}, {"type": "input_text",
                                                               "text": "hi"}]},
        # An output message sent back as history, as the SDK's response.output gives it.
        {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "hi", "annotations": []}]},
        {"role": "user", "content": "Again"},
    ]
    resp = await client.post("/v1/responses", json={
        "model": BASE, "input": items, "instructions": "You are kind."})
    r = resp.json()
    messages = [{"role": "system", "content": "You are kind."},
                {"role": "system", "content": "Be terse."},  # developer is the new system
                {"role": "user", "content": "Say hi"},
                {"role": "assistant", "content": "hi"},
                {"role": "user", "content": "Again"}]
    assert r["output"][0]["content"][0]["text"] == expected(fake_engine, messages)
    assert r["usage"]["input_tokens"] == prompt_len(fake_engine, messages)
    assert r["instructions"] == "You are kind."


async def test_same_text_as_chat_completions(client: httpx.AsyncClient) -> None:
    chat = await client.post("/v1/chat/completions", json={
        "model": "extract", "temperature": 0, "max_tokens": 20,
        "messages": [{"role": "system", "content": "Be brief."}, *USER]})
    resp = await client.post("/v1/responses", json=body(
        "extract", instructions="Be brief.", temperature=0, max_output_tokens=20))
    assert (resp.json()["output"][0]["content"][0]["text"]
            == chat.json()["choices"][0]["message"]["content"])


async def test_max_output_tokens_cut_is_incomplete(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    r = (await client.post("/v1/responses", json=body(max_output_tokens=5,
                                                      temperature=0.5, top_p=0.9))).json()
    assert r["status"] == "incomplete"
    assert r["incomplete_details"] == {"reason": "max_output_tokens"}
    assert r["completed_at"] is None
    assert r["output"][0]["status"] == "incomplete"
    assert r["output"][0]["content"][0]["text"] == expected(fake_engine, USER, max_tokens=5)
    assert r["usage"]["output_tokens"] == 5
    assert (r["max_output_tokens"], r["temperature"], r["top_p"]) == (5, 0.5, 0.9)


SCHEMA: dict[str, Any] = {"type": "object", "properties": {"name": {"type": "string"}},
                          "required": ["name"], "additionalProperties": False}


async def test_text_format_json_schema_and_json_object(client: httpx.AsyncClient) -> None:
    fmt = {"type": "json_schema", "name": "person", "schema": SCHEMA, "strict": True}
    r = (await client.post("/v1/responses", json=body(text={"format": fmt}))).json()
    jsonschema.validate(json.loads(r["output"][0]["content"][0]["text"]), SCHEMA)
    assert r["text"] == {"format": fmt}  # echoed as sent, "schema" and all
    r = (await client.post("/v1/responses", json=body(
        text={"format": {"type": "json_object"}}))).json()
    assert json.loads(r["output"][0]["content"][0]["text"]) == {}
    r = (await client.post("/v1/responses", json=body(
        text={"format": {"type": "text"}}))).json()
    assert r["status"] == "completed" and r["text"] == {"format": {"type": "text"}}


# --- streaming ------------------------------------------------------------------------


@pytest.mark.parametrize(("max_output_tokens", "terminal"), [
    (None, "response.completed"), (7, "response.incomplete")])
async def test_stream_events_in_order(
    client: httpx.AsyncClient, max_output_tokens: int | None, terminal: str
) -> None:
    extra = {} if max_output_tokens is None else {"max_output_tokens": max_output_tokens}
    plain = (await client.post("/v1/responses", json=body(**extra))).json()
    resp = await client.post("/v1/responses", json=body(stream=True, **extra))
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in resp.text  # that is chat's framing, not the Responses API's
    events = events_of(resp.text)
    types = [e["type"] for e in events]
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert types == [*STREAM_ORDER_HEAD, *["response.output_text.delta"] * len(deltas),
                     *STREAM_ORDER_TAIL, terminal]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    text = plain["output"][0]["content"][0]["text"]
    assert len(deltas) == len(text)  # the fake gives one character per engine delta
    assert "".join(d["delta"] for d in deltas) == text
    created, final = events[0]["response"], events[-1]["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    assert created["usage"] is None
    item_id = events[2]["item"]["id"]
    assert final["id"] == created["id"] and item_id == final["output"][0]["id"]
    assert all(e["item_id"] == item_id and e["output_index"] == 0 and e["content_index"] == 0
               and e["logprobs"] == [] for e in deltas)
    assert events[2]["item"] == {"type": "message", "id": item_id, "role": "assistant",
                                 "status": "in_progress", "content": []}
    assert events[3]["part"] == {"type": "output_text", "text": "", "annotations": []}
    assert events[-4]["text"] == text
    assert events[-3]["part"]["text"] == text
    assert events[-2]["item"] == final["output"][0]
    # The final response is the non-streamed one (ids and times aside).
    def same(r: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r.items() if k not in ("id", "created_at", "completed_at")
                } | {"output": [{**o, "id": ""} for o in r["output"]]}
    assert same(final) == same(plain)


async def test_official_client_parses_response_and_stream(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    oai = openai.AsyncOpenAI(base_url="http://test/v1", api_key="unused", http_client=client)
    resp = await oai.responses.create(model="sql-writer", input="Say hi",
                                      instructions="Be brief.", max_output_tokens=50)
    messages = [{"role": "system", "content": "Be brief."}, *USER]
    assert resp.output_text == expected(fake_engine, messages, "sql-writer", 50)
    assert resp.status == "completed" and resp.usage is not None
    assert resp.usage.input_tokens == prompt_len(fake_engine, messages)
    cut = await oai.responses.create(model=BASE, input="Say hi", max_output_tokens=3)
    assert cut.status == "incomplete" and cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"
    stream = await oai.responses.create(model=BASE, input="Say hi", stream=True)
    events = [e async for e in stream]
    assert [type(e).__name__ for e in events[:4]] == [
        "ResponseCreatedEvent", "ResponseInProgressEvent", "ResponseOutputItemAddedEvent",
        "ResponseContentPartAddedEvent"]
    assert type(events[-1]).__name__ == "ResponseCompletedEvent"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == expected(fake_engine, USER)
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == text
    assert events[-1].response.usage is not None


async def test_error_after_the_stream_started_is_an_error_event(
    app: Any, client: httpx.AsyncClient, fake_engine: FakeEngine,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    real = fake_engine.generate

    async def dies(request_id: str, prompt_token_ids: list[int], sampling: SamplingSpec,
                   adapter: AdapterSpec | None = None) -> AsyncIterator[GenerationStep]:
        steps = real(request_id, prompt_token_ids, sampling, adapter)
        yield await anext(steps)  # type: ignore[call-overload]
        raise EngineError("engine died")

    monkeypatch.setattr(fake_engine, "generate", dies)
    resp = await client.post("/v1/responses", json=body(stream=True))
    assert resp.status_code == 200
    events = events_of(resp.text)
    assert [e["type"] for e in events] == [*STREAM_ORDER_HEAD, "response.output_text.delta",
                                           "error", "response.failed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-2]["code"] == "engine_unavailable" and events[-2]["message"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["id"] == events[0]["response"]["id"]
    assert failed["error"] == {"code": "engine_unavailable", "message": events[-2]["message"]}


async def test_client_disconnect_aborts_the_engine_request(tmp_path: Path) -> None:
    # A real socket is needed: in-process transports do not report a disconnect.
    engine = FakeEngine()
    engine.step_delay = 0.02
    app = make_app(tmp_path, engine, adapters=[("a", make_adapter_dir(tmp_path, "a"))])
    async with on_socket(app) as url, httpx.AsyncClient(base_url=url) as c:
        req = {"model": "a", "input": "x", "max_output_tokens": 400, "stream": True}
        async with c.stream("POST", "/v1/responses", json=req) as resp:
            assert resp.status_code == 200
            async for line in resp.aiter_lines():
                if "output_text.delta" in line:
                    break
        for _ in range(100):
            if engine.aborted:
                break
            await asyncio.sleep(0.02)
        assert len(engine.aborted) == 1 and engine.finished == []


# --- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(("extra", "param", "code"), [
    ({"store": True}, "store", "unsupported_parameter"),
    ({"previous_response_id": "resp_123"}, "previous_response_id", "unsupported_parameter"),
    ({"tools": [{"type": "function", "name": "f", "parameters": {}}]}, "tools",
     "unsupported_parameter"),
    ({"tools": [{"type": "web_search"}]}, "tools", "unsupported_parameter"),
    ({"tool_choice": "required"}, "tool_choice", None),
    ({"reasoning": {"effort": "low"}}, "reasoning", None),
    ({"max_tokens": 5}, "max_tokens", None),  # chat's name: not the Responses API's
    ({"n": 2}, "n", None),
    ({"top_logprobs": 2}, "top_logprobs", None),
    ({"truncation": "auto"}, "truncation", None),
    ({"temperature": 3}, "temperature", None),
    ({"top_p": 0}, "top_p", None),
    ({"max_output_tokens": 0}, "max_output_tokens", None),
    ({"max_output_tokens": 10_000}, None, "context_length_exceeded"),
    ({"text": {"verbosity": "low"}}, "text.verbosity", None),
    ({"text": {"format": {"type": "json_schema", "name": "x",
                          "schema": {"type": "object", "properties": 5}}}},
     "text.format.schema", None),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema", None),
    ({"text": {"format": {"type": "text", "schema": {}}}}, "text.format.type", None),
    ({"text": {"format": {"type": "grammar"}}}, "text.format.type", None),
    ({"text": {"format": {"type": "json_schema", "json_schema": {}}}},
     "text.format.json_schema", None),
    ({"input": []}, "input", None),
    ({"input": 5}, "input", None),
    ({"input": "x" * 600}, "input", "context_length_exceeded"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]},
     "input.0", None),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "input.0.content.0", None),
    ({"input": [{"role": "tool", "content": "x"}]}, "input.0.role", None),
    ({"input": [{"role": "user", "content": "x", "name": "n"}]}, "input.0.name", None),
    ({"input": [{"role": "user", "content": [{"type": "input_text", "text": "x",
                                             "extra": 1}]}]},
     "input.0.content.0.extra", None),
    ({"metadata": {"k": "v" * 513}}, "metadata.k", None),
])
async def test_refusals_are_400_naming_the_field(
    client: httpx.AsyncClient, extra: dict[str, Any], param: str | None, code: str | None
) -> None:
    resp = await client.post("/v1/responses", json=body(**extra))
    assert_openai_error(resp, 400, code)
    if param is not None:
        assert resp.json()["error"]["param"] == param, resp.json()


async def test_refusal_messages_say_why(client: httpx.AsyncClient) -> None:
    for extra, words in [({"store": True}, "keeps no responses"),
                         ({"previous_response_id": "r"}, "keeps no responses"),
                         ({"tools": [{"type": "web_search"}]}, "tools are not supported"),
                         ({"input": [{"type": "reasoning", "summary": []}]},
                          "input items of type 'reasoning' are not supported")]:
        resp = await client.post("/v1/responses", json=body(**extra))
        assert words in resp.json()["error"]["message"], resp.json()


async def test_accepted_no_ops_and_empty_tools(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/responses", json=body(
        store=False, tools=[], tool_choice="none", truncation="disabled", user="u",
        metadata={"a": "b"}, service_tier="auto", prompt_cache_key="k",
        safety_identifier="s", instructions=None))
    assert resp.status_code == 200, resp.text
    assert resp.json()["tool_choice"] == "none"
    # Clients that send every field send null for the ones they leave unset.
    resp = await client.post("/v1/responses", json=body(store=None, text=None, tools=None))
    assert resp.status_code == 200, resp.text
    assert resp.json()["store"] is False
    # Instructions alone make a prompt too.
    resp = await client.post("/v1/responses", json={"model": BASE, "input": [],
                                                    "instructions": "Say hi"})
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("stream", [False, True])
async def test_unknown_model_is_404(client: httpx.AsyncClient, stream: bool) -> None:
    resp = await client.post("/v1/responses", json=body("no-such-adapter", stream=stream))
    assert_openai_error(resp, 404, "model_not_found")
    assert resp.json()["error"]["param"] == "model"


async def test_metrics_count_the_responses_endpoint(client: httpx.AsyncClient) -> None:
    await client.post("/v1/responses", json=body("extract"))
    await client.post("/v1/responses", json=body(store=True))
    metrics = (await client.get("/metrics")).text
    lines = [line for line in metrics.splitlines()
             if line.startswith("hotswap_requests_total{") and 'endpoint="responses"' in line]
    assert any('adapter="extract"' in line and 'status_class="2xx"' in line
               for line in lines), lines
    assert any('status_class="4xx"' in line for line in lines), lines
