"""Structured outputs and tool calls on the real engine, through the official openai
client: every constrained answer is checked against its schema, streaming and not, for
the base model and for an adapter."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import openai
import pytest
from pydantic import BaseModel
from support.server import ServerInfo

pytestmark = pytest.mark.engine

PERSON = [{"role": "user", "content": "Invent a person: give a name and an age."}]
PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 40},
                   "age": {"type": "integer", "minimum": 0, "maximum": 120}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
WEATHER = [{"role": "user", "content": "What is the weather like in Paris today?"}]
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object",
                       "properties": {"city": {"type": "string", "maxLength": 30},
                                      "unit": {"enum": ["celsius", "fahrenheit"]}},
                       "required": ["city", "unit"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "get_time", "description": "Local time in a city",
        "parameters": {"type": "object",
                       "properties": {"city": {"type": "string", "maxLength": 30}},
                       "required": ["city"], "additionalProperties": False}}},
]
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def client(server: ServerInfo) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key or "unused",
                         max_retries=0)


def streamed_text(stream: Any) -> str:
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


@pytest.mark.parametrize("model", ["base", "lora-a"])
def test_json_schema_answers_match_the_schema(server: ServerInfo, model: str) -> None:
    model = server.base_name if model == "base" else model
    fmt = {"type": "json_schema",
           "json_schema": {"name": "person", "schema": PERSON_SCHEMA, "strict": True}}
    oai = client(server)
    resp = oai.chat.completions.create(model=model, messages=PERSON, temperature=0,
                                       max_tokens=80, response_format=fmt)  # type: ignore[arg-type]
    text = resp.choices[0].message.content or ""
    jsonschema.validate(json.loads(text), PERSON_SCHEMA)
    assert resp.choices[0].finish_reason == "stop"
    stream = oai.chat.completions.create(model=model, messages=PERSON, temperature=0,
                                         max_tokens=80, response_format=fmt,  # type: ignore[arg-type]
                                         stream=True)
    assert streamed_text(stream) == text


def test_without_a_format_the_model_does_not_answer_json(server: ServerInfo) -> None:
    """The constraint is what makes the answers above JSON: the same request without it
    is prose (so the test above could fail)."""
    resp = client(server).chat.completions.create(
        model=server.base_name, messages=PERSON, temperature=0, max_tokens=80)
    with pytest.raises(ValueError):
        json.loads(resp.choices[0].message.content or "")


def test_sdk_parse_with_a_pydantic_model(server: ServerInfo) -> None:
    class Person(BaseModel):
        name: str
        age: int

    resp = client(server).chat.completions.parse(
        model=server.base_name, messages=PERSON, temperature=0,  # type: ignore[arg-type]
        max_tokens=80, response_format=Person)
    person = resp.choices[0].message.parsed
    assert isinstance(person, Person)


def test_json_object(server: ServerInfo) -> None:
    resp = client(server).chat.completions.create(
        model=server.base_name, messages=PERSON, temperature=0, max_tokens=80,
        response_format={"type": "json_object"})
    assert isinstance(json.loads(resp.choices[0].message.content or ""), dict)


def test_completions_take_response_format_and_structured_outputs(server: ServerInfo) -> None:
    oai = client(server)
    fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON_SCHEMA}}
    resp = oai.completions.create(model=server.base_name, prompt="A person as JSON:",
                                  temperature=0, max_tokens=80,
                                  extra_body={"response_format": fmt})
    jsonschema.validate(json.loads(resp.choices[0].text), PERSON_SCHEMA)
    phone = oai.completions.create(
        model="lora-b", prompt="Call me at", temperature=0, max_tokens=20,
        extra_body={"structured_outputs": {"regex": r"[0-9]{3}-[0-9]{4}"}})
    assert re.fullmatch(r"[0-9]{3}-[0-9]{4}", phone.choices[0].text)


@pytest.mark.parametrize("stream", [False, True])
def test_choice_and_grammar(server: ServerInfo, stream: bool) -> None:
    oai = client(server)
    question = [{"role": "user", "content": "Is Paris in France? Answer."}]
    answers = []
    for constraint in ({"choice": ["maybe", "certainly"]},
                       {"grammar": 'root ::= "oui" | "non"'}):
        resp = oai.chat.completions.create(
            model=server.base_name, messages=question, temperature=0, max_tokens=10,  # type: ignore[arg-type]
            stream=stream, extra_body={"structured_outputs": constraint})
        answers.append(streamed_text(resp) if stream else resp.choices[0].message.content)
    assert answers[0] in ("maybe", "certainly")
    assert answers[1] in ("oui", "non")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("extra", [
    {"response_format": {"type": "json_schema",
                         "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}},
    {"structured_outputs": {"regex": "[0-9"}},
    # Valid EBNF syntax, an undefined rule: only the engine's grammar compiler sees it.
    {"structured_outputs": {"grammar": "root ::= x y"}},
    {"structured_outputs": {"choice": ["a"], "regex": "b"}},
])
def test_invalid_constraints_are_400_with_the_reason(server: ServerInfo, extra: dict[str, Any],
                                                     stream: bool) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        resp = client(server).chat.completions.create(
            model=server.base_name, messages=PERSON, max_tokens=5, stream=stream,  # type: ignore[arg-type]
            extra_body=extra)
        if stream:
            list(resp)
    body = err.value.body
    assert isinstance(body, dict) and body.get("message"), body


# -- tool calls -------------------------------------------------------------------------

def test_named_tool_choice_forces_that_call(server: ServerInfo) -> None:
    oai = client(server)
    kwargs: dict[str, Any] = dict(
        model="lora-a", messages=WEATHER, temperature=0, max_tokens=60, tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    resp = oai.chat.completions.create(**kwargs)
    calls = resp.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    arguments = json.loads(calls[0].function.arguments)  # type: ignore[union-attr]
    jsonschema.validate(arguments, PARAMS["get_weather"])
    assert resp.choices[0].message.content is None
    assert resp.choices[0].finish_reason == "stop"  # OpenAI's for a forced function
    # Streamed: the id and name first, then the arguments in pieces; the same call.
    pieces = []
    head = None
    for chunk in oai.chat.completions.create(**kwargs, stream=True):
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            if tc.id:
                head = tc
            pieces.append(tc.function.arguments or "")  # type: ignore[union-attr]
    assert head is not None and head.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads("".join(pieces)) == arguments
    assert len(pieces) > 2  # streamed, not in one piece


@pytest.mark.parametrize("parallel", [None, False])
def test_required_tool_choice_returns_schema_valid_calls(server: ServerInfo,
                                                         parallel: bool | None) -> None:
    oai = client(server)
    kwargs: dict[str, Any] = dict(model=server.base_name, messages=WEATHER, temperature=0,
                                  max_tokens=120, tools=TOOLS, tool_choice="required")
    if parallel is not None:
        kwargs["parallel_tool_calls"] = parallel
    resp = oai.chat.completions.create(**kwargs)
    calls = resp.choices[0].message.tool_calls or []
    assert calls and resp.choices[0].finish_reason == "tool_calls"
    if parallel is False:
        assert len(calls) == 1
    for call in calls:
        jsonschema.validate(json.loads(call.function.arguments),  # type: ignore[union-attr]
                            PARAMS[call.function.name])  # type: ignore[union-attr]
        assert call.id.startswith("call_")
    streamed = []
    finish = None
    for chunk in oai.chat.completions.create(**kwargs, stream=True):
        if chunk.choices:
            streamed += chunk.choices[0].delta.tool_calls or []
            finish = chunk.choices[0].finish_reason or finish
    assert [(c.function.name, c.function.arguments) for c in streamed] == [  # type: ignore[union-attr]
        (c.function.name, c.function.arguments) for c in calls]  # type: ignore[union-attr]
    assert finish == "tool_calls"


def test_tool_refusals(server: ServerInfo) -> None:
    oai = client(server)
    # "auto" needs the model's own tool syntax and a parser for it.
    with pytest.raises(openai.BadRequestError, match="auto"):
        oai.chat.completions.create(model=server.base_name, messages=WEATHER, tools=TOOLS)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="not in tools"):
        oai.chat.completions.create(
            model=server.base_name, messages=WEATHER, tools=TOOLS,  # type: ignore[arg-type]
            tool_choice={"type": "function", "function": {"name": "nope"}})
    # The bundled model's chat template has no way to show a tool result.
    history = [*WEATHER,
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_1", "type": "function", "function": {
                       "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}]
    with pytest.raises(openai.BadRequestError, match="template"):
        oai.chat.completions.create(model=server.base_name, messages=history,  # type: ignore[arg-type]
                                    tools=TOOLS, tool_choice="none")


def test_required_with_definitions_refs(server: ServerInfo) -> None:
    """Refs into a tool's own definitions (draft-07 "definitions", as Pydantic v1 writes
    them) still resolve once the calls are wrapped in an array."""
    tool = {"type": "function", "function": {"name": "book", "parameters": {
        "type": "object", "properties": {"day": {"$ref": "#/definitions/Day"}},
        "required": ["day"], "additionalProperties": False,
        "definitions": {"Day": {"enum": ["monday", "tuesday"]}}}}}
    resp = client(server).chat.completions.create(
        model=server.base_name, temperature=0, max_tokens=60, tools=[tool],  # type: ignore[list-item]
        tool_choice="required",
        messages=[{"role": "user", "content": "Book a table for Monday."}])
    (call,) = resp.choices[0].message.tool_calls or []
    assert json.loads(call.function.arguments)["day"] in ("monday", "tuesday")  # type: ignore[union-attr]
