"""Turn engine output into OpenAI response bodies and SSE chunks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from .engine.interface import ChoiceDelta, TokenLogprob
from .errors import from_exception, to_body
from .protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionResponse,
    ChatLogprobs,
    ChatTokenLogprob,
    CompletionChoice,
    CompletionLogprobs,
    CompletionResponse,
    TopLogprob,
    Usage,
)


@dataclass
class ChoiceState:
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    #: Character offset where the next token's text starts (completions text_offset).
    offset: int = 0


class Accumulator:
    """Collects deltas per choice; gives usage and final choices."""

    def __init__(self, num_choices: int) -> None:
        self.choices = [ChoiceState() for _ in range(num_choices)]
        self.prompt_tokens = 0

    def add_prompt(self, tokens: int) -> None:
        self.prompt_tokens += tokens

    def add(self, index: int, delta: ChoiceDelta) -> None:
        state = self.choices[index]
        state.text += delta.text
        state.token_ids.extend(delta.token_ids)
        if delta.logprobs:
            state.logprobs.extend(delta.logprobs)
        if delta.finish_reason is not None:
            state.finish_reason = finish_reason(delta)

    def usage(self) -> Usage:
        completion = sum(len(c.token_ids) for c in self.choices)
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=completion,
            total_tokens=self.prompt_tokens + completion,
        )


def finish_reason(delta: ChoiceDelta) -> str | None:
    # An engine-side abort only happens when the client went away; report "stop"
    # rather than a value OpenAI clients do not know.
    return None if delta.finish_reason is None else (
        "stop" if delta.finish_reason == "abort" else delta.finish_reason
    )


# --- completions -----------------------------------------------------------


def completion_logprobs(
    logprobs: list[TokenLogprob], start_offset: int, top_k: int
) -> CompletionLogprobs:
    out = CompletionLogprobs()
    offset = start_offset
    for lp in logprobs:
        out.tokens.append(lp.token)
        out.token_logprobs.append(lp.logprob)
        out.top_logprobs.append({tok: val for tok, _, val in lp.top[:top_k]} if top_k else None)
        out.text_offset.append(offset)
        offset += len(lp.token)
    return out


def completion_response(
    request_id: str, created: int, model: str, acc: Accumulator,
    prefixes: list[str], top_k: int | None, with_token_ids: bool = False,
) -> CompletionResponse:
    choices = []
    for i, state in enumerate(acc.choices):
        lp = None
        if top_k is not None:
            lp = completion_logprobs(state.logprobs, len(prefixes[i]), top_k)
        choices.append(
            CompletionChoice(
                index=i, text=prefixes[i] + state.text, logprobs=lp,
                finish_reason=state.finish_reason,
                token_ids=state.token_ids if with_token_ids else None,
            )
        )
    return CompletionResponse(
        id=request_id, created=created, model=model, choices=choices, usage=acc.usage()
    )


def completion_chunk(
    request_id: str, created: int, model: str, index: int, text: str,
    logprobs: CompletionLogprobs | None, finish: str | None,
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": index,
            "text": text,
            "logprobs": None if logprobs is None else logprobs.model_dump(),
            "finish_reason": finish,
        }],
    }


# --- chat ------------------------------------------------------------------


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


def chat_response(
    request_id: str, created: int, model: str, acc: Accumulator, top_k: int | None,
    with_token_ids: bool = False,
) -> ChatCompletionResponse:
    return ChatCompletionResponse(
        id=request_id,
        created=created,
        model=model,
        choices=[
            ChatChoice(
                index=i,
                message=AssistantMessage(content=state.text),
                logprobs=None if top_k is None else chat_logprobs(state.logprobs, top_k),
                finish_reason=state.finish_reason,
                token_ids=state.token_ids if with_token_ids else None,
            )
            for i, state in enumerate(acc.choices)
        ],
        usage=acc.usage(),
    )


def chat_chunk(
    request_id: str, created: int, model: str, index: int, delta: dict[str, Any],
    logprobs: ChatLogprobs | None, finish: str | None,
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{
            "index": index,
            "delta": delta,
            "logprobs": None if logprobs is None else logprobs.model_dump(),
            "finish_reason": finish,
        }],
    }


def usage_chunk(request_id: str, created: int, model: str, obj: str, usage: Usage
                ) -> dict[str, Any]:
    return {"id": request_id, "object": obj, "created": created, "model": model,
            "choices": [], "usage": usage.model_dump()}


# --- SSE -------------------------------------------------------------------


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def sse_stream(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    """Frame events as SSE; an error after the headers went out becomes an error event."""
    try:
        async for event in events:
            yield sse(event)
    except Exception as exc:  # the status line is sent; this is the only way to tell
        yield sse(to_body(from_exception(exc)))
    yield "data: [DONE]\n\n"
