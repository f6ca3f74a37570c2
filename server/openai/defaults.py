"""An adapter version's task defaults applied to a request (``hotswap.json``,
:mod:`hotswap.adapters.defaults`): each default fills a field the request did not set;
whatever the request sets wins.

A field counts as set when the request sent it with a value (``"stop": null`` is unset:
some clients send every field, null when unused). Per field:

- ``max_tokens``: unless ``max_tokens`` (or, for chat, ``max_completion_tokens``) is set;
- ``temperature``, ``stop``: unless set (``"stop": []`` opts out of a default stop);
- ``response_format``: unless ``response_format`` or ``structured_outputs`` is set, and
  for chat not when a tool call is forced (``tool_choice`` ``"required"`` or a named
  function: that constrains the output already). ``{"type": "text"}`` opts out;
- ``system_prompt``: chat, as a first system message when the messages hold no system
  or developer message. Completions have no messages: it does not apply.

The Responses API reads them under its own names: ``max_output_tokens``, ``temperature``,
``text.format`` (the schema, flat), ``instructions`` (the system prompt, unless
``instructions`` is sent or the input holds a system or developer message); ``stop``
applies though the API has no such field.

The pipeline validates the request as sent first (nothing is read from the store, pulled
or loaded for a request refused anyway), then resolves ``model``, applies the defaults and
prepares again what they changed (:data:`PROMPT_FIELDS`, :data:`CONSTRAINT_FIELDS`).
"""

from __future__ import annotations

from typing import Any, TypeVar

from ...adapters.defaults import TaskDefaults
from .chat.protocol import ChatCompletionRequest, ChatMessage, NamedToolChoice
from .completions.protocol import CompletionRequest
from .protocol import SamplingFields
from .responses.protocol import PipelineRequest, TextConfig
from .structured import ResponseFormat

R = TypeVar("R", bound=SamplingFields)

#: Filled fields that change the prompt (it is tokenized again) ...
PROMPT_FIELDS = frozenset({"messages"})
#: ... and that change the output's constraint (it is checked again).
CONSTRAINT_FIELDS = frozenset({"response_format"})


def with_defaults(req: R, defaults: TaskDefaults | None) -> tuple[R, frozenset[str]]:
    """``req`` with ``defaults`` in the fields it left unset, and the names of the fields
    filled (``req`` itself and none if no default applies); ``model`` and everything the
    request set stay as sent."""
    if defaults is not None and isinstance(req, PipelineRequest):
        return _responses(req, defaults)  # type: ignore[return-value]  # R is PipelineRequest
    if defaults is None or not isinstance(req, ChatCompletionRequest | CompletionRequest):
        return req, frozenset()  # no defaults, or another endpoint's request
    sent = {f for f in req.model_fields_set if getattr(req, f, None) is not None}
    update: dict[str, Any] = {}
    if defaults.max_tokens is not None and not sent & {"max_tokens", "max_completion_tokens"}:
        update["max_tokens"] = defaults.max_tokens
    if defaults.temperature is not None and "temperature" not in sent:
        update["temperature"] = defaults.temperature
    if defaults.stop is not None and "stop" not in sent:
        update["stop"] = list(defaults.stop)
    if (defaults.response_format is not None
            and not sent & {"response_format", "structured_outputs"}
            and not _forced_tool_call(req)):
        update["response_format"] = ResponseFormat.model_validate(defaults.response_format)
    if (isinstance(req, ChatCompletionRequest) and defaults.system_prompt is not None
            and not any(m.role in ("system", "developer") for m in req.messages)):
        update["messages"] = [ChatMessage(role="system", content=defaults.system_prompt),
                              *req.messages]
    if not update:
        return req, frozenset()
    return req.model_copy(update=update), frozenset(update)


def _responses(req: PipelineRequest, defaults: TaskDefaults
               ) -> tuple[PipelineRequest, frozenset[str]]:
    body = req.body
    sent = {f for f in body.model_fields_set if getattr(body, f, None) is not None}
    update: dict[str, Any] = {}
    body_update: dict[str, Any] = {}
    filled: set[str] = set()
    if defaults.max_tokens is not None and "max_output_tokens" not in sent:
        update["max_tokens"] = body_update["max_output_tokens"] = defaults.max_tokens
        filled.add("max_tokens")
    if defaults.temperature is not None and "temperature" not in sent:
        update["temperature"] = body_update["temperature"] = defaults.temperature
        filled.add("temperature")
    if defaults.stop is not None:
        update["stop"] = list(defaults.stop)
        filled.add("stop")
    if defaults.response_format is not None and (
            body.text is None or "format" not in body.text.model_fields_set):
        fmt = defaults.response_format
        flat = ({"type": "json_schema", **{k: v for k, v in fmt["json_schema"].items()}}
                if fmt.get("type") == "json_schema" else {"type": fmt["type"]})
        body_update["text"] = TextConfig.model_validate({"format": flat})
        filled.add("response_format")
    if (defaults.system_prompt is not None and "instructions" not in sent
            and not any(item.role in ("system", "developer") for item in body.input)):
        body_update["instructions"] = defaults.system_prompt
        filled.add("messages")
    if not filled:
        return req, frozenset()
    update["body"] = body.model_copy(update=body_update)
    return req.model_copy(update=update), frozenset(filled)


def _forced_tool_call(req: SamplingFields) -> bool:
    """A chat request whose tool_choice forces a call: its output is constrained to the
    call's schema already."""
    return isinstance(req, ChatCompletionRequest) and (
        req.tool_choice == "required" or isinstance(req.tool_choice, NamedToolChoice))
