"""Task defaults over HTTP on the fake engine (which answers any structured constraint
with a text that conforms to it): uploaded with the adapter as ``hotswap.json``, shown by
``/v1/models`` and the admin API, applied to requests that leave the fields unset."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from hotswap.adapters.service import HubOptions
from support.app import app_client
from support.fake_hub import FakeHub, serving
from support.fakes import make_adapter_dir, service_options, tar_gz
from support.http import assert_openai_error

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"], "additionalProperties": False,
}
FORMAT: dict[str, Any] = {"type": "json_schema",
                          "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}}
SYSTEM = "You extract people."
#: The fake's answer to the schema is 23 characters (tokens), its echo 28.
DEFAULTS: dict[str, Any] = {"system_prompt": SYSTEM, "max_tokens": 25, "temperature": 0,
                            "stop": ["\n\n"], "response_format": FORMAT}
USER = [{"role": "user", "content": "Ana, 30."}]


def adapter_with(root: Path, name: str, defaults: dict[str, Any] | bytes | None,
                 seed: int = 5) -> Path:
    path = make_adapter_dir(root, name, seed=seed)
    if defaults is not None:
        raw = defaults if isinstance(defaults, bytes) else json.dumps(defaults).encode()
        (path / "hotswap.json").write_bytes(raw)
    return path


async def upload(client: httpx.AsyncClient, path: Path, name: str) -> httpx.Response:
    return await client.post("/v1/adapters", params={"name": name}, content=tar_gz(path),
                             headers={"Content-Type": "application/octet-stream"})


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(tmp_path) as c:
        for name, defaults in (("person", DEFAULTS), ("plain", None)):
            resp = await upload(c, adapter_with(tmp_path / "src", name, defaults), name)
            assert resp.status_code == 201, resp.text
        yield c


async def chat(client: httpx.AsyncClient, model: str, **fields: Any) -> dict[str, Any]:
    resp = await client.post("/v1/chat/completions",
                             json={"model": model, "messages": USER, **fields})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_upload_with_defaults_shows_them(client: httpx.AsyncClient) -> None:
    cards = {m["id"]: m for m in (await client.get("/v1/models")).json()["data"]}
    expected = {**DEFAULTS, "temperature": 0.0}
    assert cards["person"]["defaults"] == expected
    assert cards["plain"]["defaults"] is None and cards["fake-base"]["defaults"] is None
    assert (await client.get("/v1/models/person")).json() == cards["person"]
    info = (await client.get("/v1/adapters/person")).json()
    assert info["latest"]["defaults"] == expected
    assert (await client.get("/v1/adapters/plain")).json()["latest"]["defaults"] is None


async def test_defaults_apply_to_a_request_without_those_fields(
        client: httpx.AsyncClient) -> None:
    body = await chat(client, "person")
    assert body["model"] == "person"
    text = body["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(text), SCHEMA)  # the default response_format
    # The default system prompt is in the prompt: its template line, and nothing else.
    plain = await chat(client, "plain")
    added = len(f"<system>{SYSTEM}\n")
    assert body["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"] + added
    # The same through a stream.
    resp = await client.post("/v1/chat/completions", json={
        "model": "person", "messages": USER, "stream": True})
    deltas = [json.loads(line[6:]) for line in resp.text.splitlines()
              if line.startswith("data: {")]
    assert "".join(d["choices"][0]["delta"].get("content") or "" for d in deltas
                   if d["choices"]) == text


async def test_default_max_tokens_and_stop(client: httpx.AsyncClient) -> None:
    # Opted out of the format: the fake echoes the prompt, cut at the default max_tokens.
    body = await chat(client, "person", response_format={"type": "text"})
    choice = body["choices"][0]
    assert body["usage"]["completion_tokens"] == 25 and choice["finish_reason"] == "length"
    with pytest.raises(ValueError):
        json.loads(choice["message"]["content"])
    # What the request sets wins over every default.
    own = await chat(client, "person", response_format={"type": "text"}, max_tokens=5)
    assert own["usage"]["completion_tokens"] == 5
    stopped = await chat(client, "person", response_format={"type": "text"}, stop=["ans"])
    assert stopped["choices"][0]["message"]["content"] == "person "
    # The request's own system message keeps the default one out.
    mine = await chat(client, "person", messages=[{"role": "system", "content": "x"}, *USER],
                      response_format={"type": "text"})
    assert mine["usage"]["prompt_tokens"] == len("<system>x\n<user>Ana, 30.\n<assistant>")


async def test_completions_take_all_but_the_system_prompt(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/completions", json={"model": "person", "prompt": "Ana"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    jsonschema.validate(json.loads(body["choices"][0]["text"]), SCHEMA)
    assert body["usage"]["prompt_tokens"] == 3


async def test_forced_tool_call_is_not_given_the_format(client: httpx.AsyncClient) -> None:
    tools = [{"type": "function", "function": {
        "name": "lookup", "parameters": {"type": "object", "properties": {
            "q": {"type": "string"}}, "required": ["q"]}}}]
    # (max_tokens: the default 25 would cut the call short)
    body = await chat(client, "person", tools=tools, tool_choice="required", max_tokens=200)
    calls = body["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["lookup"]


async def test_bad_defaults_are_refused_on_upload(client: httpx.AsyncClient,
                                                  tmp_path: Path) -> None:
    bad_schema = {"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "no-such-type"}}}}
    for defaults, words in ((bad_schema, "is not a valid JSON schema"),
                            ({"top_p": 0.5}, "top_p: unknown field"),
                            (b" " * (65 << 10), "at most 65536")):
        resp = await upload(client, adapter_with(tmp_path / "bad", "b", defaults), "b")
        assert_openai_error(resp, 422, "invalid_task_defaults")
        assert words in resp.json()["error"]["message"]
        shutil.rmtree(tmp_path / "bad")
    assert_openai_error(await client.get("/v1/adapters/b"), 404, "adapter_not_found")


async def test_other_defaults_are_another_version(client: httpx.AsyncClient,
                                                  tmp_path: Path) -> None:
    same_weights = adapter_with(tmp_path / "again", "person", {"max_tokens": 3})
    resp = await upload(client, same_weights, "person-short")
    assert resp.status_code == 201, resp.text
    cards = {m["id"]: m for m in (await client.get("/v1/models")).json()["data"]}
    assert cards["person-short"]["digest"] != cards["person"]["digest"]
    assert cards["person-short"]["defaults"] == {"max_tokens": 3}
    short = await chat(client, "person-short")
    assert short["usage"]["completion_tokens"] == 3
    assert (await chat(client, "person"))["usage"]["completion_tokens"] > 3


async def test_a_hub_repo_with_hotswap_json_gets_its_defaults(tmp_path: Path) -> None:
    hub = FakeHub()
    hub.add("org/person", make_adapter_dir(tmp_path / "hub", "p", seed=9),
            **{"hotswap.json": json.dumps({"max_tokens": 4}).encode()})
    with serving(hub):
        options = replace(service_options(tmp_path),
                          hub=HubOptions(allow=("org",), endpoint=hub.url))
        async with app_client(tmp_path, options=options) as c:
            resp = await c.post("/v1/adapters/pull", json={"repo": "org/person"})
            assert resp.status_code == 201, resp.text
            assert resp.json()["version"]["defaults"] == {"max_tokens": 4}
            body = await chat(c, "org--person")
            assert body["usage"]["completion_tokens"] == 4


async def test_local_dirs_bring_their_defaults(tmp_path: Path) -> None:
    path = adapter_with(tmp_path / "src", "local", {"stop": ["answers"]})
    async with app_client(tmp_path, adapters=[("local", path)]) as c:
        card = (await c.get("/v1/models/local")).json()
        assert card["defaults"] == {"stop": ["answers"]}
        body = await chat(c, "local")
        assert body["choices"][0]["message"]["content"] == "local "
