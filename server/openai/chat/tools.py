"""Tool calls for any model: ``tool_choice`` ``"required"`` or a named function is
served by constraining the output to the tools' JSON schemas, then reading the calls
back from that JSON.

With ``"required"`` the model writes ``[{"name": ..., "parameters": {...}}, ...]`` (an
array of at least one call, at most one with ``parallel_tool_calls: false``); with a
named function it writes that function's arguments object. Both are the shapes vLLM's
own server constrains to, so a model behaves the same behind either server.
``"auto"`` needs the model to decide in its own syntax; without a parser for it
(``--tool-call-parser``) it is refused.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from ...engine.interface import StructuredOutput, Tokenizer
from ...errors import InvalidRequest, UnsupportedParameter
from ..structured import checked_schema
from .protocol import ChatCompletionRequest, NamedToolChoice, ToolCall, ToolCallFunction

ToolKind = Literal["none", "auto", "required", "named"]


@dataclass(frozen=True)
class ToolMode:
    """How a request uses its tools. ``kind`` "none": the model answers in text (it may
    still see the tools through the template); "auto": the model may call tools in its
    own syntax, read by the server's tool-call parser; "required" / "named": the
    output is constrained to calls."""

    kind: ToolKind
    #: The function a "named" choice forces.
    name: str | None = None

    @property
    def constrained(self) -> bool:
        return self.kind in ("required", "named")


NO_TOOLS = ToolMode("none")


def tool_mode(req: ChatCompletionRequest) -> ToolMode:
    """The mode of a request ``check_tools`` has passed."""
    choice = req.tool_choice
    if not req.tools or choice == "none":
        return NO_TOOLS
    if choice is None or choice == "auto":
        return ToolMode("auto")
    if choice == "required":
        return ToolMode("required")
    assert isinstance(choice, NamedToolChoice)
    return ToolMode("named", choice.function.name)


def check_tools(req: ChatCompletionRequest, tokenizer: Tokenizer) -> None:
    """400 for tools, tool_choice and parallel_tool_calls that can not be honoured
    together (or by this model). Checks every parameters schema: runs in the worker
    thread."""
    choice = req.tool_choice
    if not req.tools:
        if choice not in (None, "none"):
            raise InvalidRequest("tool_choice needs tools", param="tool_choice")
        if req.parallel_tool_calls is not None and not req.parallel_tool_calls:
            raise InvalidRequest("parallel_tool_calls needs tools",
                                 param="parallel_tool_calls")
        return
    names = [t.function.name for t in req.tools]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise InvalidRequest(f"two tools are named {dup!r}", param="tools")
    for i, tool in enumerate(req.tools):
        if tool.function.parameters is not None:
            checked_schema(tool.function.parameters, f"tools.{i}.function.parameters")
    if choice is None or choice == "auto":
        why = ("the model's chat template can not show it tools"
               if not tokenizer.template_handles_tools else
               "this server has no parser for the model's tool-call syntax "
               "(--tool-call-parser)" if tokenizer.tool_call_parser(template_tools(req) or [])
               is None else None)
        if why is not None:
            raise UnsupportedParameter(
                f"tool_choice 'auto' (the default with tools) needs the model to call "
                f"tools in its own syntax, and {why}; send tool_choice 'required' or a "
                "named function (served for any model), or 'none'", param="tool_choice")
        return
    if choice == "none":
        return
    if (req.response_format is not None and req.response_format.type != "text") or (
            req.structured_outputs is not None):
        raise InvalidRequest("a forced tool call already constrains the output; "
                             "response_format / structured_outputs can not be added",
                             param="tool_choice")
    if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
        raise InvalidRequest(f"tool_choice names {choice.function.name!r}, which is not "
                             "in tools", param="tool_choice.function.name")


def constraint(req: ChatCompletionRequest, mode: ToolMode) -> StructuredOutput | None:
    """The JSON schema the output must match in a constrained mode."""
    if not mode.constrained or not req.tools:
        return None
    params = {t.function.name: _parameters(t.function.parameters) for t in req.tools}
    if mode.kind == "named":
        assert mode.name is not None
        return StructuredOutput(json_schema=params[mode.name])
    # Definitions are pulled up to the array schema, where the tools' "#/$defs/..." and
    # "#/definitions/..." refs now point; other refs into a tool's own schema
    # ("#/properties/...") would point into the array: refused.
    defs: dict[str, dict[str, Any]] = {"$defs": {}, "definitions": {}}
    variants = []
    for name, schema in params.items():
        schema = dict(schema)
        for section, found in defs.items():
            for key, value in (schema.pop(section, None) or {}).items():
                if key in found and found[key] != value:
                    raise InvalidRequest(f"two tools define {section}/{key} differently",
                                         param="tools")
                found[key] = value
        if _has_local_ref(schema):
            raise InvalidRequest(
                f"tool {name!r}: a $ref into the tool's own schema (other than #/$defs or "
                "#/definitions) can not be served with tool_choice 'required'; name the "
                "function in tool_choice, or move the target into $defs", param="tools")
        variants.append({"type": "object",
                         "properties": {"name": {"type": "string", "enum": [name]},
                                        "parameters": schema},
                         "required": ["name", "parameters"]})
    array: dict[str, Any] = {"type": "array", "minItems": 1,
                             "items": {"type": "object", "anyOf": variants}}
    if req.parallel_tool_calls is False:
        array["maxItems"] = 1
    array.update({section: found for section, found in defs.items() if found})
    return StructuredOutput(json_schema=array)


def _has_local_ref(schema: Any) -> bool:
    stack = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith("#") and not ref.startswith(
                    ("#/$defs/", "#/definitions/")):
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _parameters(params: dict[str, Any] | None) -> dict[str, Any]:
    # A function without parameters takes an empty object (OpenAI's reading).
    return params if params else {"type": "object", "properties": {}}


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def parse_calls(mode: ToolMode, text: str) -> list[ToolCall] | None:
    """The calls in a constrained output; None if it is not complete JSON (the choice
    ran out of tokens)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if mode.kind == "named":
        assert mode.name is not None
        return [ToolCall(id=new_call_id(),
                         function=ToolCallFunction(name=mode.name, arguments=text.strip()))]
    if not isinstance(value, list):
        return None
    calls = []
    for item in value:
        if not isinstance(item, dict) or "name" not in item:
            return None
        calls.append(ToolCall(id=new_call_id(), function=ToolCallFunction(
            name=str(item["name"]),
            arguments=json.dumps(item.get("parameters", {}), ensure_ascii=False))))
    return calls


def template_tools(req: ChatCompletionRequest) -> list[dict[str, Any]] | None:
    """The tools as chat templates take them (OpenAI's function definitions)."""
    if not req.tools:
        return None
    return [t.model_dump(exclude_none=True) for t in req.tools]
