"""Structured outputs: OpenAI's ``response_format`` and vLLM's ``structured_outputs``
extension, checked here and handed to the engine as one ``StructuredOutput``.

The engine's grammar backend compiles the constraint; a schema or pattern it can not
compile is refused by the engine before the first token (a 400, see ``vllm.py``). What
can be checked without the engine is checked here first, with the reason in the 400:
a JSON schema must be a valid schema (Draft 2020-12 metaschema), a regex must compile.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Annotated, Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from ...adapters.strict_json import nesting_depth
from ..engine.interface import StructuredOutput
from ..errors import InvalidRequest
from ..limits import MAX_STOP_CHARS

#: Strings in a ``choice`` constraint; each as long as a stop string may be.
MAX_CHOICES = 256
#: Levels of nesting in a JSON schema: vLLM's own bound (MAX_STRUCTURED_OUTPUT_JSON_NESTING).
MAX_SCHEMA_NESTING = 64


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(default="response", max_length=64)
    description: str | None = None
    #: ``schema`` on the wire (a name pydantic's BaseModel keeps for itself).
    json_schema: dict[str, Any] = Field(default_factory=dict, alias="schema")
    #: OpenAI's strict mode: the output always matches the schema. Constrained decoding
    #: makes every schema strict, so both values are honoured the same way.
    strict: StrictBool | None = None


class ResponseFormat(BaseModel):
    """``{"type": "text" | "json_object" | "json_schema", "json_schema": {...}}``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StructuredOutputs(BaseModel):
    """vLLM's ``structured_outputs`` request field: exactly one constraint."""

    model_config = ConfigDict(extra="forbid")

    json_: dict[str, Any] | str | None = Field(default=None, alias="json")
    regex: str | None = Field(default=None, max_length=MAX_STOP_CHARS * 16)
    choice: Annotated[list[Annotated[str, Field(max_length=MAX_STOP_CHARS)]],
                      Field(min_length=1, max_length=MAX_CHOICES)] | None = None
    grammar: str | None = None
    json_object: bool | None = None


def structured_output(response_format: ResponseFormat | None,
                      extension: StructuredOutputs | None) -> StructuredOutput | None:
    """The one constraint a request asks for, or None; 400 for two of them or for one
    that is not valid."""
    from_format = _from_response_format(response_format)
    from_extension = _from_extension(extension)
    if from_format is not None and from_extension is not None:
        raise InvalidRequest("response_format and structured_outputs both constrain the "
                             "output; send one of them", param="structured_outputs")
    return from_format or from_extension


def _from_response_format(fmt: ResponseFormat | None) -> StructuredOutput | None:
    if fmt is None or fmt.type == "text":
        if fmt is not None and fmt.json_schema is not None:
            raise InvalidRequest("response_format.json_schema is only read with type "
                                 "'json_schema'", param="response_format.json_schema")
        return None
    if fmt.type == "json_object":
        return StructuredOutput(json_object=True)
    if fmt.json_schema is None:
        raise InvalidRequest("response_format of type 'json_schema' needs a json_schema",
                             param="response_format.json_schema")
    return StructuredOutput(json_schema=checked_schema(
        fmt.json_schema.json_schema, "response_format.json_schema.schema"))


def _from_extension(ext: StructuredOutputs | None) -> StructuredOutput | None:
    if ext is None:
        return None
    given = [k for k in ("json_", "regex", "choice", "grammar", "json_object")
             if getattr(ext, k) not in (None, False)]
    if len(given) != 1:
        raise InvalidRequest("structured_outputs takes exactly one of json, regex, choice, "
                             "grammar, json_object", param="structured_outputs")
    if ext.json_ is not None:
        schema = ext.json_
        if isinstance(schema, str):
            schema = _parse_json_schema_text(schema)
        return StructuredOutput(json_schema=checked_schema(schema, "structured_outputs.json"))
    if ext.regex is not None:
        try:
            re.compile(ext.regex)
        except re.error as exc:
            raise InvalidRequest(f"structured_outputs.regex does not compile: {exc}",
                                 param="structured_outputs.regex") from None
        return StructuredOutput(regex=ext.regex)
    if ext.choice is not None:
        return StructuredOutput(choice=tuple(ext.choice))
    if ext.grammar is not None:
        if not ext.grammar.strip():
            raise InvalidRequest("structured_outputs.grammar is empty",
                                 param="structured_outputs.grammar")
        return StructuredOutput(grammar=ext.grammar)
    return StructuredOutput(json_object=True)


def _parse_json_schema_text(text: str) -> dict[str, Any]:
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise InvalidRequest(f"structured_outputs.json is not JSON: {exc}",
                             param="structured_outputs.json") from None
    if not isinstance(parsed, dict):
        raise InvalidRequest("structured_outputs.json must be a JSON schema object",
                             param="structured_outputs.json")
    return parsed


def checked_schema(schema: dict[str, Any], param: str) -> dict[str, Any]:
    """``schema`` if it is a valid JSON schema, else a 400 that says why."""
    if nesting_depth(schema, MAX_SCHEMA_NESTING) > MAX_SCHEMA_NESTING:
        raise InvalidRequest(f"{param} nests more than {MAX_SCHEMA_NESTING} levels deep",
                             param=param)
    declared = schema.get("$schema")
    if declared is not None and not isinstance(declared, str):
        raise InvalidRequest(f"{param}: $schema must be a URI string", param=param)
    problem = _schema_problem(json.dumps(schema, sort_keys=True))
    if problem is not None:
        raise InvalidRequest(f"{param} is not a valid JSON schema{problem}", param=param)
    return schema


@functools.lru_cache(maxsize=256)
def _schema_problem(text: str) -> str | None:
    """Why a schema (as canonical JSON) is not valid, or None. Cached: a client sends the
    same schemas (its tools, its response format) request after request, and checking
    128 tools' schemas takes most of a second."""
    schema = json.loads(text)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        return f"{f' (at {where})' if where else ''}: {exc.message}"
    except Exception as exc:  # the checker's own failure on odd input is still a 400
        return f": {type(exc).__name__}"
    return None
