"""Task defaults on the real engine: an adapter uploaded with ``adapterctl --defaults``
answers requests that set none of those fields with the defaults applied (JSON valid
against the default schema, within the default max_tokens), a request opts out with
``response_format: {"type": "text"}``, ``/v1/models`` shows the defaults, and the same
weights uploaded with other defaults are another version, both served."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from support import clients
from support.peft_ref import make_lora_adapter
from support.server import ServerInfo

pytestmark = pytest.mark.engine

PERSON: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Invent a person: give a name and an age."}]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 40},
                   "age": {"type": "integer", "minimum": 0, "maximum": 120}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
JSON_DEFAULTS: dict[str, Any] = {
    "response_format": {"type": "json_schema",
                        "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}},
    "stop": ["<|im_end|>"],
    "max_tokens": 60,
}
#: The same weights with other defaults: no format, a short answer cut at any blank.
SHORT_DEFAULTS: dict[str, Any] = {"max_tokens": 12, "stop": [" ", "\n"]}


def adapterctl(server: ServerInfo, *args: str) -> Any:
    return clients.adapterctl(server.url, *args, api_key=server.api_key)


def client(server: ServerInfo) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key or "unused",
                         max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def uploaded(server: ServerInfo, base_model_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``task-json`` and ``task-short``: one LoRA's weights, two sets of defaults; name ->
    digest."""
    root = tmp_path_factory.mktemp("task-defaults")
    weights = make_lora_adapter(base_model_dir, root / "task-lora", rank=4,
                                target_modules=["q_proj", "v_proj"], seed=21)
    digests = {}
    for name, defaults in (("task-json", JSON_DEFAULTS), ("task-short", SHORT_DEFAULTS)):
        task = root / f"{name}.json"
        task.write_text(json.dumps(defaults))
        up = adapterctl(server, "upload", str(weights), "--name", name, "--defaults", str(task))
        assert up.returncode == 0, up.stderr
        assert "task defaults: " in up.stdout
        shown = json.loads(adapterctl(server, "show", name).stdout)
        assert shown["latest"]["defaults"] == defaults
        digests[name] = shown["latest"]["digest"]
    assert not (weights / "hotswap.json").exists()  # the user's dir is left as it was
    yield digests
    for name in digests:
        adapterctl(server, "delete", name)


def test_models_show_the_defaults_and_both_versions(server: ServerInfo,
                                                    uploaded: dict[str, str]) -> None:
    cards = {m.id: m.model_dump() for m in client(server).models.list().data}
    assert cards["task-json"]["defaults"] == JSON_DEFAULTS
    assert cards["task-short"]["defaults"] == SHORT_DEFAULTS
    assert cards["task-json"]["digest"] == uploaded["task-json"]
    assert uploaded["task-json"] != uploaded["task-short"]  # same weights, other version
    assert cards[server.base_name]["defaults"] is None


def test_a_request_without_the_fields_gets_the_defaults(server: ServerInfo,
                                                        uploaded: dict[str, str]) -> None:
    oai = client(server)
    resp = oai.chat.completions.create(model="task-json", messages=PERSON,
                                       temperature=0)
    assert resp.model == "task-json"
    text = resp.choices[0].message.content or ""
    jsonschema.validate(json.loads(text), SCHEMA)
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.completion_tokens <= 60
    stream: Any = oai.chat.completions.create(model="task-json", messages=PERSON,
                                              temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == text


def test_response_format_text_opts_out(server: ServerInfo, uploaded: dict[str, str]) -> None:
    oai = client(server)
    resp = oai.chat.completions.create(model="task-json", messages=PERSON,
                                       temperature=0, response_format={"type": "text"})
    text = resp.choices[0].message.content or ""
    with pytest.raises(ValueError):
        jsonschema.validate(json.loads(text), SCHEMA)
    # The other defaults still apply: the answer ends within the default max_tokens.
    assert resp.usage is not None and resp.usage.completion_tokens <= 60
    # What a request sets wins over a default.
    own = oai.chat.completions.create(model="task-json", messages=PERSON,
                                      temperature=0, response_format={"type": "text"},
                                      max_tokens=3)
    assert own.usage is not None and own.usage.completion_tokens <= 3


def test_the_other_version_serves_its_own_defaults(server: ServerInfo,
                                                   uploaded: dict[str, str]) -> None:
    oai = client(server)
    resp = oai.chat.completions.create(model="task-short", messages=PERSON,
                                       temperature=0)
    text = resp.choices[0].message.content or ""
    assert resp.usage is not None and resp.usage.completion_tokens <= 12
    assert " " not in text and "\n" not in text  # cut at the default stop strings
    # Its stop strings are its own: a request's stop replaces them.
    longer = oai.chat.completions.create(model="task-short", messages=PERSON,
                                         temperature=0, stop=["@@"])
    assert longer.usage is not None and longer.usage.completion_tokens <= 12
    assert (longer.choices[0].message.content or "").startswith(text)
    if resp.choices[0].finish_reason == "stop":
        assert len(longer.choices[0].message.content or "") > len(text)
