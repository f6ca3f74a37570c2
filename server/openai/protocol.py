"""Wire models every OpenAI endpoint shares: the sampling fields, usage, logprob entries,
the error body, and the OpenAPI documentation of error statuses.

Requests accept (and ignore) fields we do not act on, like the OpenAI API's ``user`` or
``metadata``, so stock clients work; fields that would change the answer and that we can
not honour are refused explicitly by each endpoint's ``check``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from ..limits import MAX_STOP_CHARS, MAX_STOP_SEQUENCES

StopString = Annotated[str, Field(max_length=MAX_STOP_CHARS)]
Stop = StopString | Annotated[list[StopString], Field(max_length=MAX_STOP_SEQUENCES)] | None


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingFields(BaseModel):
    """Fields shared by completions and chat completions."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(description="Base model name, or an adapter name.")
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=16)
    stop: Stop = None
    # OpenAI's seed is a 64-bit signed integer; past it the engine fails (was a 500).
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    # vLLM extensions: keep generating past end-of-sequence (benchmarks), and return
    # the generated token ids with each choice (exact comparisons with a reference).
    ignore_eos: bool = False
    return_token_ids: bool = False

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        if isinstance(self.stop, str):
            return (self.stop,)
        return tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ResponseHead(BaseModel):
    """The fields every response body and stream chunk starts with."""

    id: str
    created: int
    model: str


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


#: OpenAPI documentation of the error statuses every inference endpoint may answer.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid request"},
    401: {"model": ErrorResponse, "description": "API key missing or not valid"},
    403: {"model": ErrorResponse, "description": "The key lacks the inference scope, or a "
          "cross-site request"},
    404: {"model": ErrorResponse, "description": "Unknown model or adapter"},
    408: {"model": ErrorResponse, "description": "The request body stopped arriving"},
    413: {"model": ErrorResponse, "description": "Request body over --max-body-bytes"},
    415: {"model": ErrorResponse, "description": "Content-Type is not application/json"},
    421: {"model": ErrorResponse, "description": "Host header outside --allowed-host"},
    422: {"model": ErrorResponse, "description": "The engine could not load the adapter "
          "(adapter_load_failed)"},
    429: {"model": ErrorResponse, "description": "Too many sequences in flight (server-wide "
          "or for this key); see Retry-After"},
    503: {"model": ErrorResponse, "description": "Model still loading, engine down, or the "
          "server draining; see Retry-After"},
}
#: OpenAPI documentation of a 200 that is JSON, or SSE with ``stream: true``.
SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream=true"}
}
