"""HTTP layer against the fake engine: unknown and accepted fields, structured-output and
tool refusals, and the shapes of tool-call answers and stream chunks. (That the engine
honours the constraints is tested on the real engine in tests/integration.)"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hotswap.server.engine.fake import FakeEngine
from support.http import assert_openai_error

BASE = "fake-base"
TOOL = {"type": "function", "function": {
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
OTHER = {"type": "function", "function": {"name": "get_time"}}
DEEP: dict[str, Any] = {"type": "object"}
for _ in range(150):
    DEEP = {"type": "object", "properties": {"a": DEEP}}


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": BASE, "messages": [{"role": "user", "content": "Weather?"}],
            "max_tokens": 200, **extra}


def events(text: str) -> list[Any]:
    return [json.loads(b[len("data: "):]) for b in text.split("\n\n")
            if b.startswith("data: ") and b != "data: [DONE]"]


async def test_unknown_fields_are_named_in_one_400(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/chat/completions",
                             json=chat(frobnicate=1, guided_json={}))
    assert_openai_error(resp, 400)
    message = resp.json()["error"]["message"]
    assert "'frobnicate'" in message and "'guided_json'" in message


async def test_an_unknown_field_does_not_hide_another_error(client: httpx.AsyncClient
                                                             ) -> None:
    resp = await client.post("/v1/chat/completions", json=chat(temperature=5, foo=1))
    assert_openai_error(resp, 400)
    message = resp.json()["error"]["message"]
    assert "'foo'" in message and "temperature" in message


@pytest.mark.parametrize("body,param", [
    (chat(store=True), "store"),
    (chat(logit_bias={"abc": 1}), "logit_bias"),
    (chat(logit_bias={"5": 101}), "logit_bias"),
    (chat(logit_bias={str(0x110000): 1}), "logit_bias"),  # past the fake's vocabulary
    (chat(stop_token_ids=[-1]), "stop_token_ids"),
    (chat(min_tokens=300), "min_tokens"),
    (chat(top_k=-2), "top_k"),
    (chat(repetition_penalty=0), "repetition_penalty"),
    (chat(stream_options={"include_usage": True, "continuous": True}), "stream_options"),
    (chat(stream_options={"include_usage": True}), "stream_options"),  # without stream
    (chat(logit_bias={"\u00b2": 1}), "logit_bias"),  # "²".isdigit() is true
    (chat(response_format={"type": "json_schema", "json_schema": {
        "name": "x", "schema": DEEP}}), "response_format.json_schema.schema"),
    (chat(response_format={"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"$schema": []}}}), "response_format.json_schema.schema"),
    (chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "string"}, "b": {
            "$ref": "#/properties/a"}}}}}], tool_choice="required"), "tools"),
    (chat(response_format={"type": "json_schema"}), "response_format"),
    (chat(response_format={"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": 5}}}), "response_format.json_schema.schema"),
    (chat(response_format={"type": "xml"}), "response_format"),
    (chat(response_format={"type": "json_object"},
          structured_outputs={"choice": ["a"]}), "structured_outputs"),
    (chat(structured_outputs={}), "structured_outputs"),
    (chat(structured_outputs={"regex": "("}), "structured_outputs.regex"),
    (chat(structured_outputs={"choice": []}), "structured_outputs"),
    (chat(structured_outputs={"json": "{not json"}), "structured_outputs.json"),
    (chat(tool_choice="required"), "tool_choice"),
    (chat(tools=[TOOL]), "tool_choice"),  # "auto" without a parser
    (chat(tools=[TOOL, TOOL], tool_choice="required"), "tools"),
    (chat(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "x"}}),
     "tool_choice.function.name"),
    (chat(tools=[{"type": "function", "function": {
        "name": "f", "parameters": {"type": "nope"}}}], tool_choice="required"),
     "tools.0.function.parameters"),
    (chat(tools=[TOOL], tool_choice="required", response_format={"type": "json_object"}),
     "tool_choice"),
    (chat(tools=[{"type": "function", "function": {"name": "bad name!"}}],
          tool_choice="required"), "tools"),
])
async def test_refusals(client: httpx.AsyncClient, body: dict[str, Any], param: str) -> None:
    resp = await client.post("/v1/chat/completions", json=body)
    assert_openai_error(resp, 400)
    assert (resp.json()["error"]["param"] or "").startswith(param), resp.json()


async def test_documented_no_op_fields_are_accepted(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/chat/completions", json=chat(
        user="u", metadata={"k": "v"}, store=False, service_tier="auto",
        prompt_cache_key="p", safety_identifier="s"))
    assert resp.status_code == 200, resp.text


async def test_completions_take_structured_outputs(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/completions", json={
        "model": BASE, "prompt": "x", "max_tokens": 20,
        "structured_outputs": {"choice": ["alpha", "beta"]}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["text"] == "alpha"  # the fake picks the first


async def test_named_tool_call_shape(client: httpx.AsyncClient) -> None:
    body = chat(tools=[TOOL, OTHER],
                tool_choice={"type": "function", "function": {"name": "get_weather"}})
    resp = await client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    choice = resp.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "s"}

    stream = await client.post("/v1/chat/completions", json={**body, "stream": True})
    chunks = events(stream.text)
    first = chunks[0]["choices"][0]["delta"]
    assert first["role"] == "assistant" and "content" not in first
    head = first["tool_calls"][0]
    assert head["function"] == {"name": "get_weather", "arguments": ""} and head["id"]
    pieces = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[1:]
              if c["choices"][0]["delta"].get("tool_calls")]
    assert all(set(p) == {"index", "function"} for p in pieces)
    assert json.loads("".join(p["function"]["arguments"] for p in pieces)) == {"city": "s"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_required_tool_calls_shape(client: httpx.AsyncClient) -> None:
    body = chat(tools=[TOOL, OTHER], tool_choice="required", parallel_tool_calls=False)
    resp = await client.post("/v1/chat/completions", json=body)
    choice = resp.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "s"}
    chunks = events((await client.post("/v1/chat/completions",
                                       json={**body, "stream": True})).text)
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("get_weather", call["function"]["arguments"])]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_cut_tool_call_is_text_with_length(client: httpx.AsyncClient) -> None:
    body = chat(tools=[TOOL], tool_choice="required", max_tokens=5)
    choice = (await client.post("/v1/chat/completions", json=body)).json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert "tool_calls" not in choice["message"] and choice["message"]["content"]


async def test_tool_history_reaches_a_template_that_shows_tools(
        client: httpx.AsyncClient, fake_engine: FakeEngine) -> None:
    history = [{"role": "user", "content": "Weather?"},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "c1", "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
               {"role": "tool", "tool_call_id": "c1", "content": "rain"}]
    resp = await client.post("/v1/chat/completions", json={
        "model": BASE, "messages": history, "tools": [TOOL], "tool_choice": "none"})
    assert resp.status_code == 200, resp.text
    # The template got the calls with their arguments as objects, and the result.
    rendered = fake_engine.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Weather?"},
         {"role": "assistant", "content": "", "tool_calls": [
             {"id": "c1", "type": "function",
              "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
         {"role": "tool", "content": "rain", "tool_call_id": "c1"}],
        add_generation_prompt=True, tools=[TOOL])
    assert resp.json()["usage"]["prompt_tokens"] == len(rendered)
    for arguments in ("{", "[1]"):
        bad = [*history[:1], {**history[1], "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "f", "arguments": arguments}}]}]
        resp = await client.post("/v1/chat/completions",
                                 json={"model": BASE, "messages": bad})
        assert_openai_error(resp, 400)
        assert resp.json()["error"]["param"] == "messages.1.tool_calls.0.function.arguments"
    # A call without arguments is an empty object, as vLLM reads it.
    empty = [*history[:1], {**history[1], "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]}]
    resp = await client.post("/v1/chat/completions", json={"model": BASE, "messages": empty})
    assert resp.status_code == 200, resp.text


async def test_required_lifts_definitions_of_every_draft(client: httpx.AsyncClient) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"p": {"$ref": "#/definitions/P"}},
        "required": ["p"], "definitions": {"P": {"type": "integer"}}}}}
    resp = await client.post("/v1/chat/completions",
                             json=chat(tools=[tool], tool_choice="required"))
    assert resp.status_code == 200, resp.text
    (call,) = resp.json()["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "f"
