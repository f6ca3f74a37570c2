"""``POST /v1/responses`` on the real engine, through the official openai client: the
same greedy text as chat completions of the same messages (base model and adapter),
structured output, the typed stream, and a cut by max_output_tokens."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest
from support.server import ServerInfo

pytestmark = pytest.mark.engine

INSTRUCTIONS = "You are a helpful assistant. Answer in one sentence."
QUESTION = "What is the capital of France?"
PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 40},
                   "age": {"type": "integer", "minimum": 0, "maximum": 120}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def client(server: ServerInfo) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key or "unused",
                         max_retries=0)


@pytest.mark.parametrize("model", ["base", "lora-a"])
def test_output_text_equals_the_chat_completion(server: ServerInfo, model: str) -> None:
    model = server.base_name if model == "base" else model
    oai = client(server)
    chat = oai.chat.completions.create(
        model=model, temperature=0, max_tokens=40,
        messages=[{"role": "system", "content": INSTRUCTIONS},
                  {"role": "user", "content": QUESTION}])
    resp = oai.responses.create(model=model, input=QUESTION, instructions=INSTRUCTIONS,
                                max_output_tokens=40, temperature=0)
    assert resp.output_text == chat.choices[0].message.content
    assert resp.output_text
    assert resp.model == model and resp.id.startswith("resp_")
    assert resp.usage is not None and chat.usage is not None
    assert resp.usage.input_tokens == chat.usage.prompt_tokens
    assert resp.usage.output_tokens == chat.usage.completion_tokens
    assert resp.status == ("incomplete" if chat.choices[0].finish_reason == "length"
                           else "completed")
    # Message items (a history with the model's own answer sent back) give the same
    # prompt as the same chat messages.
    history: Any = [{"role": "user", "content": QUESTION}, *resp.output,
                    {"role": "user", "content": [{"type": "input_text",
                                                  "text": "And of Italy?"}]}]
    again = oai.responses.create(model=model, input=history, instructions=INSTRUCTIONS,
                                 max_output_tokens=40, temperature=0)
    chat_again = oai.chat.completions.create(
        model=model, temperature=0, max_tokens=40,
        messages=[{"role": "system", "content": INSTRUCTIONS},
                  {"role": "user", "content": QUESTION},
                  {"role": "assistant", "content": resp.output_text},
                  {"role": "user", "content": "And of Italy?"}])
    assert again.output_text == chat_again.choices[0].message.content


@pytest.mark.parametrize("model", ["base", "lora-a"])
def test_json_schema_format_gives_valid_json(server: ServerInfo, model: str) -> None:
    model = server.base_name if model == "base" else model
    resp = client(server).responses.create(
        model=model, input="Invent a person: give a name and an age.", temperature=0,
        max_output_tokens=80,
        text={"format": {"type": "json_schema", "name": "person", "schema": PERSON_SCHEMA,
                         "strict": True}})
    jsonschema.validate(json.loads(resp.output_text), PERSON_SCHEMA)
    assert resp.status == "completed"


def test_stream_events_in_order_join_to_the_text(server: ServerInfo) -> None:
    oai = client(server)
    kwargs: dict[str, Any] = {"model": "lora-a", "input": QUESTION,
                              "instructions": INSTRUCTIONS, "max_output_tokens": 40,
                              "temperature": 0}
    plain = oai.responses.create(**kwargs)
    events = list(oai.responses.create(stream=True, **kwargs))
    types = [e.type for e in events]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    terminal = "response.completed" if plain.status == "completed" else "response.incomplete"
    assert types == ["response.created", "response.in_progress",
                     "response.output_item.added", "response.content_part.added",
                     *["response.output_text.delta"] * len(deltas),
                     "response.output_text.done", "response.content_part.done",
                     "response.output_item.done", terminal]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert len(deltas) > 1  # streamed as generated, not in one piece
    assert "".join(d.delta for d in deltas) == plain.output_text
    final = events[-1]
    assert final.type == terminal
    assert final.response.output_text == plain.output_text
    assert final.response.usage is not None and plain.usage is not None
    assert final.response.usage.output_tokens == plain.usage.output_tokens
    assert final.response.usage.input_tokens == plain.usage.input_tokens


@pytest.mark.parametrize("stream", [False, True])
def test_small_max_output_tokens_is_incomplete(server: ServerInfo, stream: bool) -> None:
    oai = client(server)
    kwargs: dict[str, Any] = {"model": server.base_name, "max_output_tokens": 3,
                              "temperature": 0,
                              "input": "Write a long story about a dragon."}
    if stream:
        events = list(oai.responses.create(stream=True, **kwargs))
        assert events[-1].type == "response.incomplete"
        resp = events[-1].response
    else:
        resp = oai.responses.create(**kwargs)
    assert resp.status == "incomplete"
    assert resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "max_output_tokens"
    assert resp.usage is not None and resp.usage.output_tokens == 3


def test_refusals_on_the_real_server(server: ServerInfo) -> None:
    oai = client(server)
    for extra in ({"store": True}, {"previous_response_id": "resp_1"},
                  {"tools": [{"type": "function", "name": "f", "parameters": {}}]}):
        with pytest.raises(openai.BadRequestError) as err:
            oai.responses.create(model=server.base_name, input="hi", **extra)
        assert err.value.code == "unsupported_parameter"
    with pytest.raises(openai.NotFoundError):
        oai.responses.create(model="no-such-adapter", input="hi")
