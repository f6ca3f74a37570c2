"""Wire schema of ``/v1/responses`` (OpenAI's Responses API): the request, the Response
object and the typed stream events, shaped as the ``openai`` client parses them.

The request is not a :class:`~..protocol.SamplingFields`: the Responses API names its
fields differently (``max_output_tokens``, ``text.format``) and has none of the chat
extensions, which would be accepted silently if it inherited them. :class:`PipelineRequest`
is what the shared pipeline reads instead: the same request under SamplingFields' names.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from ...limits import MAX_MESSAGES, MAX_TOOLS
from ..protocol import HarmlessFields, SamplingFields

#: The roles of a message item, as OpenAI lists them ("developer" is the new "system").
Role = Literal["user", "system", "developer", "assistant"]


def _refuse_other(value: Any, kinds: tuple[str, ...], what: str,
                  default: str | None = None) -> Any:
    """``value``, unless it is an item or part of another ``type``: then one error that
    names the type, at its index (rather than one per field it lacks or adds)."""
    kind = value.get("type", default) if isinstance(value, dict) else None
    if isinstance(kind, str) and kind not in kinds:
        raise PydanticCustomError(
            "unsupported_type", "{what} of type '{kind}' are not supported ({kinds} only)",
            {"what": what, "kind": kind[:64], "kinds": ", ".join(kinds)})
    return value


class TextContent(BaseModel):
    """A text part; ``output_text`` is what a client copies back from our own output.
    Other parts (images, files, refusals) are refused by type."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["input_text", "output_text"]
    text: str
    # Copied back with an output_text part; they change nothing in a prompt.
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def only_text(cls, value: Any) -> Any:
        return _refuse_other(value, ("input_text", "output_text"), "content parts")


def _as_parts(value: Any) -> Any:
    # A string is one text part. Converted rather than a ``str | list`` union, whose
    # member names would end up in the names of unknown fields in 400s.
    return [{"type": "input_text", "text": value}] if isinstance(value, str) else value


class MessageItem(BaseModel):
    """``{"type": "message", "role", "content"}``; ``type`` may be left out. Other
    items (function calls and their outputs, reasoning, item references) are refused
    by type."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["message"] = "message"
    role: Role
    content: Annotated[list[TextContent], BeforeValidator(
        _as_parts, json_schema_input_type=str | list[TextContent])]
    # Copied back with an output message; they change nothing in a prompt.
    id: str | None = Field(default=None, max_length=256)
    status: Literal["in_progress", "completed", "incomplete"] | None = None

    @model_validator(mode="before")
    @classmethod
    def only_messages(cls, value: Any) -> Any:
        return _refuse_other(value, ("message",), "input items", default="message")


def _as_items(value: Any) -> Any:
    """A string is one user message; a list is counted before its items are validated
    one by one (as chat counts its messages)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and len(value) > MAX_MESSAGES:
        raise PydanticCustomError("too_long", "at most {n} input items in one request",
                                  {"n": MAX_MESSAGES})
    return value


def _unset(value: Any) -> bool:
    return value is None


class TextFormat(BaseModel):
    """``text.format``: ``{"type": "text" | "json_object"}`` or the flat
    ``{"type": "json_schema", "name", "schema", "description", "strict"}``. Echoed in
    the Response with only the fields given, as OpenAI echoes it."""

    # Only "schema" on the wire: chat's nested {"json_schema": {...}}, sent here by
    # mistake, must be refused, not read as a schema that admits anything.
    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(default=None, max_length=64, exclude_if=_unset)
    description: str | None = Field(default=None, exclude_if=_unset)
    #: ``schema`` on the wire (a name pydantic's BaseModel keeps for itself).
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema",
                                               exclude_if=_unset)
    #: OpenAI's strict mode: constrained decoding makes every schema strict, so both
    #: values are honoured the same way.
    strict: bool | None = Field(default=None, exclude_if=_unset)


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: TextFormat = Field(default_factory=lambda: TextFormat(type="text"))


class ResponsesRequest(HarmlessFields):
    """``POST /v1/responses``. Every field takes effect, is a documented no-op
    (``user``, ``metadata`` and the other HARMLESS_FIELDS) or is refused by name."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Base model name, or an adapter name.")
    input: Annotated[list[MessageItem], BeforeValidator(
        _as_items, json_schema_input_type=str | list[MessageItem]),
                     Field(max_length=MAX_MESSAGES)] = Field(
        description="A user message, or message items "
        "({role, content: text | [input_text parts]}).")
    instructions: str | None = Field(default=None,
                                     description="A system message put before the input.")
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    text: TextConfig | None = None
    stream: bool = False
    #: OpenAI keeps responses with ``store: true`` (its default); this server keeps none.
    store: bool | None = Field(default=None, description="Only false (the default "
                               "here): no response is kept.")
    previous_response_id: str | None = Field(
        default=None, max_length=256, description="Refused: no response is kept.")
    tools: Annotated[list[dict[str, Any]], Field(max_length=MAX_TOOLS)] | None = Field(
        default=None, description="Refused unless empty: tools are not supported here.")
    tool_choice: Literal["none", "auto"] | None = Field(
        default=None, description="Without tools: none or auto, both meaning no calls.")
    #: Refusing an over-long input is what "disabled" means (OpenAI's default).
    truncation: Literal["disabled"] | None = None


class PipelineRequest(SamplingFields):
    """A Responses request as the shared pipeline reads it: its sampling fields under
    SamplingFields' names (n is 1; everything else at its default), and the request."""

    body: ResponsesRequest

    @classmethod
    def of(cls, req: ResponsesRequest) -> PipelineRequest:
        return cls(model=req.model, max_tokens=req.max_output_tokens,
                   temperature=1.0 if req.temperature is None else req.temperature,
                   top_p=1.0 if req.top_p is None else req.top_p,
                   stream=req.stream, body=req)


# --- the Response object ---------------------------------------------------------


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)


class OutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[OutputText]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ResponseError(BaseModel):
    code: str
    message: str


Status = Literal["in_progress", "completed", "incomplete", "failed"]


class ResponseObject(BaseModel):
    """OpenAI's Response: the output, and the settings it was made with echoed back."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Status
    completed_at: int | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    model: str
    output: list[OutputMessage]
    usage: ResponseUsage | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float
    top_p: float
    text: TextConfig
    tools: list[Any] = Field(default_factory=list)
    tool_choice: Literal["none", "auto"] = "auto"
    #: OpenAI's default; there are no tools to call here, in parallel or not.
    parallel_tool_calls: bool = True
    previous_response_id: None = None
    store: Literal[False] = False
    background: Literal[False] = False
    truncation: Literal["disabled"] = "disabled"
    metadata: dict[str, str] = Field(default_factory=dict)
    user: str | None = None


# --- stream events -----------------------------------------------------------------


class _Event(BaseModel):
    #: Position in the stream, set as the event is framed (the endpoint's ``frame``).
    sequence_number: int = 0


class ResponseEvent(_Event):
    type: Literal["response.created", "response.in_progress", "response.completed",
                  "response.incomplete", "response.failed"]
    response: ResponseObject


class OutputItemEvent(_Event):
    type: Literal["response.output_item.added", "response.output_item.done"]
    output_index: int
    item: OutputMessage


class ContentPartEvent(_Event):
    type: Literal["response.content_part.added", "response.content_part.done"]
    item_id: str
    output_index: int
    content_index: int
    part: OutputText


class TextDeltaEvent(_Event):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[Any] = Field(default_factory=list)


class TextDoneEvent(_Event):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[Any] = Field(default_factory=list)


class ErrorEvent(_Event):
    """An error after the stream's 200 went out (then ``response.failed`` ends it)."""

    type: Literal["error"] = "error"
    code: str | None
    message: str
    param: str | None = None
