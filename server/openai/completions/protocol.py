"""Wire schema of ``/v1/completions``: request, response and stream chunks."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, PlainValidator
from pydantic_core import PydanticCustomError

from ...limits import MAX_LOGPROBS, MAX_PROMPTS
from ..protocol import ResponseHead, SamplingFields, Usage


def _check_prompt(value: Any) -> str | list[str] | list[int] | list[list[int]]:
    """One pass over the prompt, on the event loop: pydantic's own union validation
    tries each member over the whole list and builds an error per item for the members
    that fail (100,000 one-token prompts took ~0.5 s)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or not value:
        raise _shape_error()
    first = value[0]
    if not _is_token(first) and len(value) > MAX_PROMPTS:  # a batch, not one prompt's ids
        raise PydanticCustomError("too_long", "at most {n} prompts in one request",
                                  {"n": MAX_PROMPTS})
    if isinstance(first, str):
        if all(isinstance(p, str) for p in value):
            return value
    elif _is_token(first):
        if all(_is_token(t) for t in value):
            return value
    elif isinstance(first, list) and all(
            isinstance(p, list) and p and all(_is_token(t) for t in p) for p in value):
        return value
    raise _shape_error()


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shape_error() -> PydanticCustomError:
    return PydanticCustomError(
        "prompt_shape", "prompt must be a string, a list of strings, a list of token ids "
        "(integers) or a list of non-empty lists of token ids")


PromptInput = Annotated[
    str | list[str] | list[int] | list[list[int]],
    PlainValidator(_check_prompt,
                   json_schema_input_type=str | list[str] | list[int] | list[list[int]]),
]


class CompletionRequest(SamplingFields):
    prompt: PromptInput
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1)


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None
    token_ids: list[int] | None = None


class CompletionResponse(ResponseHead):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage | None = None


class CompletionChunkChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class CompletionChunk(ResponseHead):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChunkChoice]
    usage: Usage | None = None
