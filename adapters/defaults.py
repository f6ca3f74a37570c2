"""Task defaults of an adapter version: request fields its task wants unless a request
sets them (a system prompt, ``max_tokens``, ``temperature``, ``stop``, a
``response_format``), kept in ``hotswap.json`` beside ``adapter_config.json``.

The file is one of the version's files, so it is inside the content digest
(:func:`~hotswap.adapters.manifest.content_digest`): the defaults are as immutable as the
weights, other defaults are another version, and the same weights with other defaults
are another version too. Admission reads it once, strictly (:func:`read_defaults`:
unknown fields, bad types or ranges, a response_format whose schema is not a valid JSON
schema are refused with :class:`~hotswap.adapters.errors.InvalidTaskDefaults`), and the
manifest records the parsed :class:`TaskDefaults`, so serving never reads the file.

Applying them to a request is the server's business (``server/openai/defaults.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import jsonschema
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from .errors import InvalidTaskDefaults
from .strict_json import load_bounded

DEFAULTS_FILE = "hotswap.json"
#: Bytes of ``hotswap.json``: a system prompt and a JSON schema fit many times over.
MAX_DEFAULTS_BYTES = 64 << 10
#: Characters of the default system prompt.
MAX_SYSTEM_PROMPT_CHARS = 16384
#: Nesting of ``hotswap.json`` (JSON schemas nest deeper than PEFT configs do).
MAX_DEFAULTS_DEPTH = 32
#: The request bounds on ``stop`` (``server/limits.py`` holds the same numbers; the
#: registry does not import the server).
MAX_STOP_SEQUENCES = 16
MAX_STOP_CHARS = 256

StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]


class _JsonSchemaSpec(BaseModel):
    """``response_format.json_schema`` as a chat request sends it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(default="response", min_length=1, max_length=64,
                      pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = Field(default=None, max_length=4096)
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class _ResponseFormatSpec(BaseModel):
    """A chat-style ``response_format`` that constrains the output: ``json_object``, or
    ``json_schema`` with a valid JSON schema (``text`` would be no default at all)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["json_object", "json_schema"]
    json_schema: _JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_iff_json_schema(self) -> _ResponseFormatSpec:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type 'json_schema' needs a 'json_schema' object")
        if self.type == "json_object" and self.json_schema is not None:
            raise ValueError("'json_schema' is only read with type 'json_schema'")
        return self


class TaskDefaults(BaseModel):
    """What ``hotswap.json`` holds. Every field is optional; a field a request sets wins.

    ``response_format`` is kept as the JSON object a chat request would send (checked
    against that shape and its schema against its metaschema here), so it reaches
    clients (``GET /v1/models``) and the request exactly as written.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    #: Chat only: the system message put first when the request's messages have no
    #: system or developer message.
    system_prompt: str | None = Field(default=None, min_length=1,
                                      max_length=MAX_SYSTEM_PROMPT_CHARS)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    stop: Annotated[list[StopString], Field(min_length=1,
                                            max_length=MAX_STOP_SEQUENCES)] | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("response_format")
    @classmethod
    def _chat_response_format(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        spec = _ResponseFormatSpec.model_validate(value)
        if spec.json_schema is not None:
            schema = spec.json_schema.schema_
            try:
                jsonschema.validators.validator_for(schema).check_schema(schema)
            except jsonschema.SchemaError as exc:
                where = "/".join(str(p) for p in exc.path)
                raise ValueError("json_schema.schema is not a valid JSON schema"
                                 f"{f' (at {where})' if where else ''}: {exc.message}"
                                 ) from None
        return value

    @model_serializer(mode="wrap")
    def _only_given(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Unset fields are left out: the manifest, /v1/models and the admin API show
        # what the file says.
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None}

    def is_empty(self) -> bool:
        return not self.model_dump()


def parse_defaults(raw: bytes) -> TaskDefaults:
    """The :class:`TaskDefaults` of ``hotswap.json``'s bytes; InvalidTaskDefaults saying
    what is wrong (for each field at fault) otherwise."""
    if len(raw) > MAX_DEFAULTS_BYTES:
        raise InvalidTaskDefaults(f"{DEFAULTS_FILE} is {len(raw)} bytes; at most "
                                  f"{MAX_DEFAULTS_BYTES}")
    value = load_bounded(raw, name=DEFAULTS_FILE, max_depth=MAX_DEFAULTS_DEPTH,
                         error=InvalidTaskDefaults)
    if not isinstance(value, dict):
        raise InvalidTaskDefaults(f"{DEFAULTS_FILE} must hold a JSON object")
    try:
        return TaskDefaults.model_validate(value)
    except ValidationError as exc:
        raise InvalidTaskDefaults(f"{DEFAULTS_FILE}: {_reasons(exc)}") from None


def read_defaults(path: Path) -> TaskDefaults:
    """:func:`parse_defaults` of the file at ``path``, whose size is checked before it is
    read."""
    size = path.stat().st_size
    if size > MAX_DEFAULTS_BYTES:
        raise InvalidTaskDefaults(f"{DEFAULTS_FILE} is {size} bytes; at most "
                                  f"{MAX_DEFAULTS_BYTES}")
    return parse_defaults(path.read_bytes())


def _reasons(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field (accepted: system_prompt, max_tokens, temperature, " \
                      "stop, response_format)" if len(error["loc"]) == 1 else "unknown field"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)
