"""Wire models every OpenAI endpoint shares: the sampling fields, usage, logprob entries,
the error body, and the OpenAPI documentation of error statuses.

Every field a request may carry is declared: an unknown field is a 400 that names it,
never silently ignored. A few OpenAI fields that change nothing in the answer are
accepted as documented no-ops (``HARMLESS_FIELDS``: ``user``, ``metadata``...); every
other accepted field takes effect, or the endpoint's ``check`` refuses it.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ..limits import MAX_LOGIT_BIAS, MAX_STOP_CHARS, MAX_STOP_SEQUENCES
from .structured import ResponseFormat, StructuredOutputs

StopString = Annotated[str, Field(max_length=MAX_STOP_CHARS)]
Stop = StopString | Annotated[list[StopString], Field(max_length=MAX_STOP_SEQUENCES)] | None


def _token_keys(bias: dict[str, float]) -> dict[str, float]:
    """OpenAI's logit_bias keys are token ids written as strings."""
    for key in bias:
        # isascii: str.isdigit takes "²" and "٣", which int() then refuses or reads.
        if not (key.isascii() and key.isdigit()):
            raise ValueError(f"key {key!r} is not a token id")
    return bias


LogitBias = Annotated[
    dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]],
    Field(max_length=MAX_LOGIT_BIAS), AfterValidator(_token_keys),
]

#: OpenAI request fields accepted and documented as no-ops: they label or route a
#: request on OpenAI's side and change nothing in the answer.
HARMLESS_FIELDS = ("user", "metadata", "service_tier", "prompt_cache_key",
                   "safety_identifier")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class HarmlessFields(BaseModel):
    """The accepted no-ops (HARMLESS_FIELDS), bounded, on every inference request."""

    model_config = ConfigDict(extra="forbid")

    user: str | None = Field(default=None, max_length=256)
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(
        default=None, max_length=16)
    service_tier: str | None = Field(default=None, max_length=32)
    prompt_cache_key: str | None = Field(default=None, max_length=256)
    safety_identifier: str | None = Field(default=None, max_length=256)


class SamplingFields(HarmlessFields):
    """Fields shared by completions and chat completions."""

    model_config = ConfigDict(extra="forbid")

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
    logit_bias: LogitBias | None = None
    # vLLM's sampling extensions, as its OpenAI server names them.
    top_k: int | None = Field(default=None, ge=-1, description="vLLM extension: sample "
                              "from the k most likely tokens; 0 or -1: all")
    min_p: float | None = Field(default=None, ge=0.0, le=1.0,
                                description="vLLM extension")
    min_tokens: int = Field(default=0, ge=0, description="vLLM extension: tokens before "
                            "end-of-sequence or a stop may end a choice")
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=10.0,
                                             description="vLLM extension")
    stop_token_ids: Annotated[list[int], Field(max_length=MAX_STOP_SEQUENCES)] | None = (
        Field(default=None, description="vLLM extension"))
    skip_special_tokens: bool = Field(default=True, description="vLLM extension")
    include_stop_str_in_output: bool = Field(default=False, description="vLLM extension")
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = Field(
        default=None, description="vLLM extension: one of json, regex, choice, grammar, "
        "json_object")
    #: OpenAI keeps completions with ``store: true``; this server keeps none, so only
    #: false is accepted.
    store: bool | None = None

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
