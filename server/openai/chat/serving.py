"""What chat completions add to the shared pipeline: messages through the model's chat
template, chat-shaped logprobs, and role / content / finish chunks."""

from __future__ import annotations

from collections.abc import Sequence

from ...engine.interface import PromptTooLong, Tokenizer, TokenLogprob
from ...errors import InvalidRequest, UnsupportedParameter
from ..accumulate import Accumulator, ChoiceState, finish_reason
from ..generate import Output
from ..pipeline import Call, Endpoint
from ..prompts import Prompt, TokenBudget, check_token_ids
from ..protocol import TopLogprob, Usage
from .protocol import (
    AssistantMessage,
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

ChatCall = Call[ChatCompletionRequest]


class ChatEndpoint(Endpoint[ChatCompletionRequest]):
    id_prefix = "chatcmpl"
    prompt_param = "messages"
    metric_name = "chat"

    def check(self, req: ChatCompletionRequest) -> None:
        if req.tools:
            raise UnsupportedParameter("tools are not supported", param="tools")
        if req.response_format is not None and req.response_format.type != "text":
            raise UnsupportedParameter(
                f"response_format {req.response_format.type!r} is not supported",
                param="response_format",
            )
        if req.top_logprobs is not None and not req.logprobs:
            raise InvalidRequest("top_logprobs requires logprobs to be true",
                                 param="top_logprobs")

    def count_prompts(self, req: ChatCompletionRequest) -> int:
        return 1

    def prompts(self, req: ChatCompletionRequest, tokenizer: Tokenizer, budget: TokenBudget
                ) -> list[Prompt]:
        messages = [_template_message(m, i) for i, m in enumerate(req.messages)]
        try:
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                limit=budget.limit(0))
        except PromptTooLong as exc:
            raise budget.refusal(exc, used=0) from None
        check_token_ids(ids, tokenizer.vocab_size, "messages")
        return [Prompt(ids, "")]

    def max_tokens(self, req: ChatCompletionRequest) -> int | None:
        return req.max_completion_tokens or req.max_tokens

    def logprobs(self, req: ChatCompletionRequest) -> int | None:
        return (req.top_logprobs or 0) if req.logprobs else None

    def response(self, call: ChatCall, acc: Accumulator) -> ChatCompletionResponse:
        top_k = self.logprobs(call.req)
        return ChatCompletionResponse(
            id=call.request_id, created=call.created, model=call.req.model,
            choices=[
                ChatChoice(
                    index=i,
                    message=AssistantMessage(content=state.text),
                    logprobs=None if top_k is None else chat_logprobs(state.logprobs, top_k),
                    finish_reason=state.finish_reason,
                    token_ids=state.token_ids if call.req.return_token_ids else None,
                )
                for i, state in enumerate(acc.choices)
            ],
            usage=acc.usage(),
        )

    def stream_start(self, call: ChatCall) -> Sequence[ChatCompletionChunk]:
        return [_chunk(call, [ChatChunkChoice(
                    index=i, delta=DeltaMessage(role="assistant", content=""))])
                for i in range(call.num_choices)]

    def stream_delta(self, call: ChatCall, out: Output, before: ChoiceState
                     ) -> Sequence[ChatCompletionChunk]:
        d, top_k = out.delta, self.logprobs(call.req)
        chunks = []
        lp = chat_logprobs(d.logprobs, top_k) if top_k is not None and d.logprobs else None
        if d.text or lp:
            chunks.append(_chunk(call, [ChatChunkChoice(
                index=out.index, delta=DeltaMessage(content=d.text), logprobs=lp)]))
        if d.finish_reason:
            chunks.append(_chunk(call, [ChatChunkChoice(
                index=out.index, delta=DeltaMessage(), finish_reason=finish_reason(d))]))
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


def _template_message(message: ChatMessage, i: int) -> dict[str, str]:
    if message.role == "tool":
        raise UnsupportedParameter("tool messages are not supported", param=f"messages.{i}")
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
    return {"role": role, "content": text}


CHAT = ChatEndpoint()
