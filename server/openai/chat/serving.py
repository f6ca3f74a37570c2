"""What chat completions add to the shared pipeline: messages through the model's chat
template, chat-shaped logprobs, and role / content / finish chunks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ...engine.interface import (
    EngineRequestError,
    PromptTooLong,
    StructuredOutput,
    Tokenizer,
    TokenLogprob,
)
from ...errors import InvalidRequest, UnsupportedParameter
from ..accumulate import Accumulator, ChoiceState, finish_reason
from ..generate import Output
from ..pipeline import Call, Endpoint
from ..prompts import Prompt, TokenBudget, check_token_ids
from ..protocol import TopLogprob, Usage
from .protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatLogprobs,
    ChatMessage,
    ChatTokenLogprob,
    DeltaMessage,
)
from .tool_output import stream_deltas, stream_head, whole_message
from .tools import check_tools, constraint, template_tools, tool_mode

ChatCall = Call[ChatCompletionRequest]


class ChatEndpoint(Endpoint[ChatCompletionRequest]):
    id_prefix = "chatcmpl"
    prompt_param = "messages"
    metric_name = "chat"

    def check(self, req: ChatCompletionRequest) -> None:
        if req.top_logprobs is not None and not req.logprobs:
            raise InvalidRequest("top_logprobs requires logprobs to be true",
                                 param="top_logprobs")

    def count_prompts(self, req: ChatCompletionRequest) -> int:
        return 1

    def prompts(self, req: ChatCompletionRequest, tokenizer: Tokenizer, budget: TokenBudget
                ) -> list[Prompt]:
        check_tools(req, tokenizer)
        if tool_mode(req).kind == "auto" and "skip_special_tokens" not in req.model_fields_set:
            parser = tokenizer.tool_call_parser(template_tools(req) or [])
            if parser is not None and parser.keeps_special_tokens:
                # As vLLM's server does: the parser must see markers that are special
                # tokens. Set on the request, which sampling_spec reads after this.
                req.skip_special_tokens = False
        messages = template_messages(req.messages,
                                     handles_tools=tokenizer.template_handles_tools)
        tools = template_tools(req) if tokenizer.template_handles_tools else None
        try:
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                limit=budget.limit(0), tools=tools)
        except PromptTooLong as exc:
            raise budget.refusal(exc, used=0) from None
        except EngineRequestError as exc:
            raise InvalidRequest(str(exc), param="messages") from None
        check_token_ids(ids, tokenizer.vocab_size, "messages")
        return [Prompt(ids, "")]

    def structured(self, req: ChatCompletionRequest) -> StructuredOutput | None:
        mode = tool_mode(req)
        if mode.constrained:
            return constraint(req, mode)
        return super().structured(req)

    def max_tokens(self, req: ChatCompletionRequest) -> int | None:
        return req.max_completion_tokens or req.max_tokens

    def logprobs(self, req: ChatCompletionRequest) -> int | None:
        return (req.top_logprobs or 0) if req.logprobs else None

    def response(self, call: ChatCall, acc: Accumulator) -> ChatCompletionResponse:
        top_k, mode = self.logprobs(call.req), tool_mode(call.req)
        choices = []
        for i, state in enumerate(acc.choices):
            message, finish = whole_message(call, mode, state.text, state.finish_reason)
            choices.append(ChatChoice(
                index=i, message=message, finish_reason=finish,
                logprobs=None if top_k is None else chat_logprobs(state.logprobs, top_k),
                token_ids=state.token_ids if call.req.return_token_ids else None,
            ))
        return ChatCompletionResponse(id=call.request_id, created=call.created,
                                      model=call.req.model, choices=choices,
                                      usage=acc.usage())

    def stream_start(self, call: ChatCall) -> Sequence[ChatCompletionChunk]:
        mode = tool_mode(call.req)
        return [_chunk(call, [ChatChunkChoice(index=i, delta=stream_head(call, mode))])
                for i in range(call.num_choices)]

    def stream_delta(self, call: ChatCall, out: Output, before: ChoiceState
                     ) -> Sequence[ChatCompletionChunk]:
        d, top_k, mode = out.delta, self.logprobs(call.req), tool_mode(call.req)
        lp = chat_logprobs(d.logprobs, top_k) if top_k is not None and d.logprobs else None
        deltas, finish = stream_deltas(call, mode, out.index, d, before.text,
                                       finish_reason(d))
        if lp and not deltas:
            deltas = [DeltaMessage()]  # logprobs of tokens held back (a call being read)
        chunks = [_chunk(call, [ChatChunkChoice(index=out.index, delta=delta,
                                                logprobs=lp if j == 0 else None)])
                  for j, delta in enumerate(deltas)]
        if d.finish_reason:
            chunks.append(_chunk(call, [ChatChunkChoice(
                index=out.index, delta=DeltaMessage(), finish_reason=finish)]))
        return chunks

    def usage_chunk(self, call: ChatCall, usage: Usage) -> ChatCompletionChunk:
        return _chunk(call, [], usage)


def _chunk(call: ChatCall, choices: list[ChatChunkChoice], usage: Usage | None = None
           ) -> ChatCompletionChunk:
    return ChatCompletionChunk(id=call.request_id, created=call.created, model=call.req.model,
                               choices=choices, usage=usage)


def chat_logprobs(logprobs: list[TokenLogprob], top_k: int) -> ChatLogprobs:
    return ChatLogprobs(
        content=[
            ChatTokenLogprob(
                token=lp.token,
                logprob=lp.logprob,
                bytes=list(lp.token.encode()),
                top_logprobs=[
                    TopLogprob(token=t, logprob=v, bytes=list(t.encode()))
                    for t, _, v in lp.top[:top_k]
                ],
            )
            for lp in logprobs
        ]
    )


def template_messages(messages: list[ChatMessage], *, handles_tools: bool
                      ) -> list[dict[str, Any]]:
    """The messages as chat templates take them; 400 for tool calls or tool results the
    template can not show the model."""
    out = []
    for i, message in enumerate(messages):
        if (message.role == "tool" or message.tool_calls) and not handles_tools:
            raise UnsupportedParameter(
                "the model's chat template can not express tool calls or tool results "
                f"(messages.{i}); send their content as ordinary messages",
                param=f"messages.{i}")
        out.append(_template_message(message, i))
    return out


def _template_message(message: ChatMessage, i: int) -> dict[str, Any]:
    content = message.content
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        parts: list[str] = []
        for part in content:
            if part.type != "text" or not hasattr(part, "text"):
                raise UnsupportedParameter(
                    f"content part of type {part.type!r} is not supported (text only)",
                    param=f"messages.{i}.content",
                )
            parts.append(str(part.text))
        text = "".join(parts)
    # Chat templates know system/user/assistant; OpenAI's "developer" is the new system.
    role = "system" if message.role == "developer" else message.role
    out: dict[str, Any] = {"role": role, "content": text}
    if message.tool_calls:
        # Templates read the arguments as an object (vLLM hands them over the same way).
        out["tool_calls"] = [
            {"id": c.id, "type": "function",
             "function": {"name": c.function.name,
                          "arguments": _arguments(c.function.arguments, i, j)}}
            for j, c in enumerate(message.tool_calls)]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        out["name"] = message.name
    return out


def _arguments(text: str, i: int, j: int) -> dict[str, Any]:
    param = f"messages.{i}.tool_calls.{j}.function.arguments"
    if not text.strip():
        return {}  # a call without arguments (vLLM reads it the same way)
    try:
        value = json.loads(text)
    except ValueError:
        raise InvalidRequest("tool call arguments are not JSON", param=param) from None
    if not isinstance(value, dict):
        # Templates iterate the arguments as an object.
        raise InvalidRequest("tool call arguments must be a JSON object", param=param)
    return value


CHAT = ChatEndpoint()
