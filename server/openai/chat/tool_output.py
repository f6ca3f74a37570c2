"""A choice's output as tool calls, whole or as stream deltas, in each tool mode.

- "named": the output is the forced function's arguments; streamed as they are written,
  after a first delta with the call's id and name.
- "required": the output is a JSON array of calls, read when the choice ends; the calls
  go out then, each complete.
- "auto": the model's own syntax, read by the engine's parser (``ToolCallParser``);
  text that is not a call streams as content; ``parallel_tool_calls: false`` keeps the
  first call only (the model may have written more: only a constraint could stop it).

A choice that ends by ``max_tokens`` before its calls are complete has finish reason
"length": answered whole, its text is the content (no calls); streamed, what was sent
stays sent (a named call's partial arguments, an "auto" call's first pieces), as
OpenAI's own streams end when cut.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...engine.interface import ChoiceDelta, ToolCallDelta, ToolCallParser
from ..pipeline import Call
from .protocol import (
    AssistantMessage,
    ChatCompletionRequest,
    DeltaFunction,
    DeltaMessage,
    DeltaToolCall,
    ToolCall,
    ToolCallFunction,
)
from .tools import ToolMode, new_call_id, parse_calls, template_tools

ChatCall = Call[ChatCompletionRequest]


def tool_finish(mode: ToolMode, finish: str | None) -> str | None:
    # OpenAI ends a choice that called tools with "tool_calls", but a forced named
    # function with "stop"; a choice cut by max_tokens stays "length".
    if finish == "length":
        return finish
    return "stop" if mode.kind == "named" else "tool_calls"


def whole_message(call: ChatCall, mode: ToolMode, text: str, finish: str | None
                  ) -> tuple[AssistantMessage, str | None]:
    """A finished choice's message and finish reason."""
    if mode.constrained:
        calls = parse_calls(mode, text)
        if calls is not None:
            return AssistantMessage(content=None, tool_calls=calls), tool_finish(mode, finish)
    elif mode.kind == "auto":
        parser = _new_parser(call)
        content, parsed = parser.parse(text)
        if call.req.parallel_tool_calls is False:
            parsed = parsed[:1]
        if parsed:
            return AssistantMessage(content=content or None, tool_calls=[
                ToolCall(id=new_call_id(), function=ToolCallFunction(
                    name=c.name, arguments=c.arguments)) for c in parsed],
            ), tool_finish(mode, finish)
    return AssistantMessage(content=text), finish


def stream_head(call: ChatCall, mode: ToolMode) -> DeltaMessage:
    """The first delta of every choice."""
    if mode.kind == "named":
        # The call's id and name go out first; its arguments follow as they are written.
        head = DeltaToolCall(index=0, id=new_call_id(), type="function",
                             function=DeltaFunction(name=mode.name, arguments=""))
        return DeltaMessage(role="assistant", tool_calls=[head])
    return DeltaMessage(role="assistant", content=None if mode.constrained else "")


def stream_deltas(call: ChatCall, mode: ToolMode, index: int, delta: ChoiceDelta,
                  text_before: str, finish: str | None
                  ) -> tuple[list[DeltaMessage], str | None]:
    """The deltas (content or tool-call pieces) one engine delta makes, and the choice's
    finish reason if it ends here."""
    if mode.kind == "named":
        return ([DeltaMessage(tool_calls=[DeltaToolCall(
            index=0, function=DeltaFunction(arguments=delta.text))])] if delta.text else [],
            tool_finish(mode, finish) if finish else None)
    if mode.kind == "required":
        if not delta.finish_reason:
            return [], None  # the array is read whole at the end
        text = text_before + delta.text
        calls = parse_calls(mode, text)
        if calls is None:
            return [DeltaMessage(content=text)], finish
        return [DeltaMessage(tool_calls=[
            DeltaToolCall(index=j, id=c.id, type="function", function=DeltaFunction(
                name=c.function.name, arguments=c.function.arguments))
            for j, c in enumerate(calls)])], tool_finish(mode, finish)
    if mode.kind == "auto":
        return _auto_deltas(call, index, delta, finish)
    return ([DeltaMessage(content=delta.text)] if delta.text else []), finish


def _auto_deltas(call: ChatCall, index: int, delta: ChoiceDelta, finish: str | None
                 ) -> tuple[list[DeltaMessage], str | None]:
    parsers: dict[int, ToolCallParser] = call.state.setdefault("parsers", {})
    ids: dict[tuple[int, int], str] = call.state.setdefault("call_ids", {})
    parser = parsers.get(index) or parsers.setdefault(index, _new_parser(call))
    content, pieces = parser.feed(delta.text, delta.token_ids)
    if delta.finish_reason:
        pieces = [*pieces, *parser.finish()]
    if call.req.parallel_tool_calls is False:
        pieces = [p for p in pieces if p.index == 0]  # the first call only
    out = [DeltaMessage(content=content)] if content else []
    if pieces:
        out.append(DeltaMessage(tool_calls=[_piece(p, index, ids) for p in pieces]))
    called = any(choice == index for choice, _ in ids)
    if finish and called:
        finish = tool_finish(ToolMode("auto"), finish)
    return out, finish


def _piece(piece: ToolCallDelta, choice: int, ids: dict[tuple[int, int], str]
           ) -> DeltaToolCall:
    key = (choice, piece.index)
    first = key not in ids
    if first:
        ids[key] = new_call_id()
    return DeltaToolCall(index=piece.index, id=ids[key] if first else None,
                         type="function" if first else None,
                         function=DeltaFunction(name=piece.name if first else None,
                                                arguments=piece.arguments))


def _new_parser(call: ChatCall) -> ToolCallParser:
    tools: list[dict[str, Any]] = template_tools(call.req) or []
    make: Callable[[list[dict[str, Any]]], ToolCallParser | None] = (
        call.tokenizer.tool_call_parser)
    parser = make(tools)
    # check_tools refused "auto" on a server without a parser.
    assert parser is not None
    return parser
