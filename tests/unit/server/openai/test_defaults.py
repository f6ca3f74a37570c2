"""Task defaults merged into a request: each only where the request left its field
unset; the request's own values always win."""

from __future__ import annotations

from typing import Any

import pytest
from hotswap.adapters.defaults import TaskDefaults
from hotswap.server.openai.chat.protocol import ChatCompletionRequest
from hotswap.server.openai.completions.protocol import CompletionRequest
from hotswap.server.openai.defaults import CONSTRAINT_FIELDS, PROMPT_FIELDS, with_defaults
from hotswap.server.openai.structured import ResponseFormat, structured_output

SCHEMA: dict[str, Any] = {"type": "object", "properties": {"a": {"type": "integer"}},
                          "required": ["a"]}
FORMAT: dict[str, Any] = {"type": "json_schema",
                          "json_schema": {"name": "thing", "schema": SCHEMA, "strict": True}}
ALL = TaskDefaults(system_prompt="Be terse.", max_tokens=7, temperature=0.0, stop=["END"],
                   response_format=FORMAT)
USER = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "a", "messages": USER, **fields})


def completion(**fields: Any) -> CompletionRequest:
    return CompletionRequest.model_validate({"model": "a", "prompt": "hi", **fields})


def test_no_defaults_is_the_request_itself() -> None:
    req = chat()
    assert with_defaults(req, None) == (req, frozenset())
    assert with_defaults(req, TaskDefaults()) == (req, frozenset())


def test_every_default_fills_an_unset_chat_request() -> None:
    req, filled = with_defaults(chat(), ALL)
    assert filled == {"max_tokens", "temperature", "stop", "response_format", "messages"}
    assert filled & PROMPT_FIELDS and filled & CONSTRAINT_FIELDS
    assert (req.max_tokens, req.temperature, req.stop) == (7, 0.0, ["END"])
    assert req.response_format == ResponseFormat.model_validate(FORMAT)
    assert [(m.role, m.content) for m in req.messages] == [("system", "Be terse."),
                                                          ("user", "hi")]
    assert req.model == "a"  # the response names the model as sent
    # The constraint the engine gets is the schema's.
    constraint = structured_output(req.response_format, req.structured_outputs)
    assert constraint is not None and constraint.json_schema == SCHEMA


@pytest.mark.parametrize(("sent", "kept"), [
    ({"max_tokens": 100}, {"max_tokens": 100}),
    ({"max_completion_tokens": 100}, {"max_tokens": None, "max_completion_tokens": 100}),
    ({"temperature": 1.0}, {"temperature": 1.0}),  # the default value, but sent: it wins
    ({"stop": "x"}, {"stop": "x"}),
    ({"stop": []}, {"stop": []}),  # an empty list opts out of a default stop
])
def test_a_field_the_request_sets_wins(sent: dict[str, Any], kept: dict[str, Any]) -> None:
    req, filled = with_defaults(chat(**sent), ALL)
    for field, value in kept.items():
        assert getattr(req, field) == value
        assert field not in filled


def test_null_counts_as_unset() -> None:
    """Clients that send every field (null when unused) still get the defaults."""
    req, filled = with_defaults(chat(max_tokens=None, stop=None, response_format=None), ALL)
    assert {"max_tokens", "stop", "response_format"} <= filled
    assert req.max_tokens == 7 and req.stop == ["END"] and req.response_format is not None


def test_response_format_text_opts_out() -> None:
    req, filled = with_defaults(chat(response_format={"type": "text"}), ALL)
    assert req.response_format == ResponseFormat(type="text")
    assert "response_format" not in filled
    assert structured_output(req.response_format, req.structured_outputs) is None


def test_own_constraint_keeps_the_default_out() -> None:
    req, filled = with_defaults(chat(response_format={"type": "json_object"}), ALL)
    assert req.response_format == ResponseFormat(type="json_object")
    req, filled = with_defaults(chat(structured_outputs={"regex": "[0-9]+"}), ALL)
    assert req.response_format is None and "response_format" not in filled


TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "f"}}])
def test_a_forced_tool_call_gets_no_response_format(choice: object) -> None:
    req, filled = with_defaults(chat(tools=TOOLS, tool_choice=choice), ALL)
    assert req.response_format is None and "response_format" not in filled
    assert req.max_tokens == 7  # the other defaults still apply


def test_tool_choice_none_still_gets_the_format() -> None:
    req, _ = with_defaults(chat(tools=TOOLS, tool_choice="none"), ALL)
    assert req.response_format is not None


@pytest.mark.parametrize("role", ["system", "developer"])
def test_system_prompt_only_without_a_system_message(role: str) -> None:
    messages = [{"role": role, "content": "mine"}, *USER]
    req, filled = with_defaults(chat(messages=messages), ALL)
    assert "messages" not in filled
    assert [(m.role, m.content) for m in req.messages] == [(role, "mine"), ("user", "hi")]


def test_system_prompt_after_earlier_turns() -> None:
    """Only the messages decide: a conversation without a system message gets it first."""
    messages = [*USER, {"role": "assistant", "content": "hello"}, *USER]
    req, _ = with_defaults(chat(messages=messages), ALL)
    assert [m.role for m in req.messages] == ["system", "user", "assistant", "user"]


def test_completions_get_all_but_the_system_prompt() -> None:
    req, filled = with_defaults(completion(), ALL)
    assert filled == {"max_tokens", "temperature", "stop", "response_format"}
    assert req.prompt == "hi"
    assert (req.max_tokens, req.temperature, req.stop) == (7, 0.0, ["END"])
    kept, filled = with_defaults(completion(max_tokens=3, response_format={"type": "text"}),
                                 ALL)
    assert kept.max_tokens == 3 and kept.response_format == ResponseFormat(type="text")
    assert "max_tokens" not in filled and "response_format" not in filled


def test_only_a_system_prompt_on_completions_changes_nothing() -> None:
    req = completion()
    assert with_defaults(req, TaskDefaults(system_prompt="x")) == (req, frozenset())


def test_the_request_is_not_changed_in_place() -> None:
    req = chat()
    with_defaults(req, ALL)
    assert req.max_tokens is None and len(req.messages) == 1 and req.response_format is None
    assert req.model_fields_set == {"model", "messages"}


def test_responses_requests_take_the_defaults_under_their_own_names() -> None:
    from hotswap.server.openai.responses.protocol import PipelineRequest, ResponsesRequest
    from hotswap.server.openai.responses.serving import RESPONSES

    req = PipelineRequest.of(ResponsesRequest.model_validate({"model": "a", "input": "hi"}))
    got, filled = with_defaults(req, ALL)
    assert filled == {"max_tokens", "temperature", "stop", "response_format", "messages"}
    assert (got.max_tokens, got.temperature, got.stop) == (7, 0.0, ["END"])
    assert got.body.max_output_tokens == 7 and got.body.instructions == "Be terse."
    structured = RESPONSES.structured(got)
    assert structured is not None and structured.json_schema == SCHEMA
    # What the request sends wins; a system message in the input keeps instructions unset.
    sent = PipelineRequest.of(ResponsesRequest.model_validate({
        "model": "a", "max_output_tokens": 3, "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "input": [{"role": "system", "content": "mine"}, {"role": "user", "content": "hi"}]}))
    got, filled = with_defaults(sent, ALL)
    assert filled == {"stop"}
    assert got.max_tokens == 3 and got.body.instructions is None
    assert RESPONSES.structured(got) is None
