"""``GET /v1/models/{id}``, ``POST /tokenize`` and ``POST /detokenize`` on the fake engine:
shapes, the same facts as the listing and the inference endpoints, 404s, key scoping,
refusals, and the tokenizer thread."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
from hotswap.adapters.service import HubOptions
from hotswap.server.auth import KeyRing, Security, key_id
from hotswap.server.engine.fake import CharTokenizer, FakeEngine
from hotswap.server.key_policy import KeyPolicy
from hotswap.server.limits import MAX_MESSAGES, RequestLimits
from safetensors.torch import save_file
from support.app import app_client, in_process, make_app
from support.fake_hub import FakeHub, serving
from support.fakes import LIMITS, make_adapter_dir, service_options
from support.http import assert_openai_error

BASE = "fake-base"
HI = [{"role": "user", "content": "Say hi"}]


def template_ids(messages: Sequence[dict[str, str]], *, generation: bool = True) -> list[int]:
    return CharTokenizer().apply_chat_template(list(messages),
                                               add_generation_prompt=generation)


async def listed(client: httpx.AsyncClient, **kw: Any) -> dict[str, Any]:
    resp = await client.get("/v1/models", **kw)
    assert resp.status_code == 200, resp.text
    return {m["id"]: m for m in resp.json()["data"]}


# --- GET /v1/models/{id} ---------------------------------------------------------------


async def test_retrieve_gives_the_listed_card(client: httpx.AsyncClient) -> None:
    cards = await listed(client)
    for model_id in (BASE, "sql-writer", "extract"):
        resp = await client.get(f"/v1/models/{model_id}")
        assert resp.status_code == 200, resp.text
        assert resp.json() == cards[model_id]
    assert cards[BASE]["kind"] == "base" and cards[BASE]["size_bytes"] == 123456
    assert cards["extract"]["digest"] and cards["extract"]["residency"] == "gpu"


async def test_retrieve_tags_by_name_colon_tag(client: httpx.AsyncClient) -> None:
    digest = (await listed(client))["extract"]["digest"]
    put = await client.put("/v1/adapters/extract/tags/stable", json={"digest": digest})
    assert put.status_code == 200, put.text
    cards = await listed(client)
    resp = await client.get("/v1/models/extract:stable")
    assert resp.json() == cards["extract:stable"]
    # The default tag spelled out is the listing's bare name, under the id asked for.
    latest = (await client.get("/v1/models/extract:latest")).json()
    assert latest == cards["extract"] | {"id": "extract:latest", "root": "extract:latest"}


@pytest.mark.parametrize("model_id", ["no-such", "extract:no-such-tag", "Not A Name",
                                      "org/repo", "org/repo@v1", "a/b/c", "fake-base/x"])
async def test_retrieve_unknown_is_model_not_found(client: httpx.AsyncClient,
                                                   model_id: str) -> None:
    resp = await client.get(f"/v1/models/{model_id}")
    assert_openai_error(resp, 404, "model_not_found")
    assert resp.json()["error"]["param"] == "model"


async def test_retrieve_with_the_official_client(client: httpx.AsyncClient) -> None:
    oai = openai.AsyncOpenAI(base_url="http://test/v1", api_key="unused", http_client=client)
    model = await oai.models.retrieve("sql-writer")
    assert model.id == "sql-writer" and model.object == "model"
    assert model.model_extra is not None and model.model_extra["parent"] == BASE
    assert (await oai.models.retrieve(BASE)).id == BASE
    # The client percent-encodes "/" in a hub id: still this route, still a 404.
    with pytest.raises(openai.NotFoundError) as err:
        await oai.models.retrieve("org/no-such")
    assert err.value.code == "model_not_found"


# --- POST /tokenize, /detokenize -----------------------------------------------------------


async def test_tokenize_prompt(client: httpx.AsyncClient) -> None:
    resp = await client.post("/tokenize", json={"model": BASE, "prompt": "hi there"})
    assert resp.status_code == 200, resp.text
    ids = [ord(c) for c in "hi there"]
    assert resp.json() == {"count": 8, "max_model_len": 512, "tokens": ids,
                           "num_virtual_tokens": 0}
    # Every adapter shares the base model's tokenizer; no model means the base model.
    for body in ({"model": "sql-writer", "prompt": "hi there"}, {"prompt": "hi there"},
                 {"prompt": "hi there", "add_special_tokens": True}):
        assert (await client.post("/tokenize", json=body)).json()["tokens"] == ids
    empty = await client.post("/tokenize", json={"prompt": ""})
    assert empty.json()["count"] == 0 and empty.json()["tokens"] == []


async def test_tokenize_messages_counts_what_chat_sends(client: httpx.AsyncClient) -> None:
    resp = await client.post("/tokenize", json={"model": "extract", "messages": HI})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["tokens"] == template_ids(HI) and body["count"] == len(template_ids(HI))
    chat = await client.post("/v1/chat/completions",
                             json={"model": "extract", "messages": HI, "max_tokens": 2})
    assert chat.json()["usage"]["prompt_tokens"] == body["count"]
    # Chat completions' message rules: developer is system, text parts are joined.
    messages = [{"role": "developer", "content": "Be brief"},
                {"role": "user", "content": [{"type": "text", "text": "Say "},
                                             {"type": "text", "text": "hi"}]}]
    same = [{"role": "system", "content": "Be brief"}, HI[0]]
    resp = await client.post("/tokenize", json={"messages": messages})
    assert resp.json()["tokens"] == template_ids(same)
    resp = await client.post("/tokenize", json={"messages": HI, "add_generation_prompt": False,
                                                 "add_special_tokens": False})
    assert resp.json()["tokens"] == template_ids(HI, generation=False)


async def test_detokenize_round_trips(client: httpx.AsyncClient) -> None:
    ids = (await client.post("/tokenize", json={"prompt": "Grüße, 世界"})).json()["tokens"]
    for model in (BASE, "sql-writer", None):
        body: dict[str, Any] = {"tokens": ids} | ({"model": model} if model else {})
        resp = await client.post("/detokenize", json=body)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"prompt": "Grüße, 世界"}
    assert (await client.post("/detokenize", json={"tokens": []})).json() == {"prompt": ""}


async def test_served_at_the_root_only_as_vllm_does(client: httpx.AsyncClient) -> None:
    for path in ("/v1/tokenize", "/v1/detokenize"):
        resp = await client.post(path, json={"prompt": "x", "tokens": [1]})
        assert_openai_error(resp, 404, "not_found")
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/tokenize", "/detokenize", "/v1/models/{model_id}"} <= set(paths)


@pytest.mark.parametrize("path", ["/tokenize", "/detokenize"])
async def test_unknown_model_is_404(client: httpx.AsyncClient, path: str) -> None:
    for model in ("no-such", "org/repo", "extract:nope"):
        resp = await client.post(path, json={"model": model, "prompt": "x", "tokens": [1]})
        assert_openai_error(resp, 404, "model_not_found")
        assert resp.json()["error"]["param"] == "model"


@pytest.mark.parametrize(("body", "param", "code"), [
    ({"model": BASE}, "prompt", None),
    ({"prompt": "x", "messages": HI}, "prompt", None),
    ({"prompt": "x", "return_token_strs": True}, "return_token_strs", "unsupported_parameter"),
    ({"prompt": "x", "add_special_tokens": False}, "add_special_tokens",
     "unsupported_parameter"),
    ({"messages": HI, "add_special_tokens": True}, "add_special_tokens",
     "unsupported_parameter"),
    ({"messages": HI, "continue_final_message": True}, "continue_final_message",
     "unsupported_parameter"),
    ({"messages": HI, "chat_template": "{{ x }}"}, "chat_template", "unsupported_parameter"),
    ({"messages": HI, "chat_template_kwargs": {"a": 1}}, "chat_template_kwargs",
     "unsupported_parameter"),
    ({"messages": HI, "mm_processor_kwargs": {"a": 1}}, "mm_processor_kwargs",
     "unsupported_parameter"),
    ({"prompt": "x", "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools",
     None),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x"}}]}]}, "messages.0.content",
     "unsupported_parameter"),
    ({"messages": []}, "messages", None),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages", None),
    ({"messages": [{"role": "user", "content": "x"}] * (MAX_MESSAGES + 1)}, "messages", None),
    ({"prompt": 5}, "prompt", None),
    ({"prompt": "x", "model": 3}, "model", None),
    ({"messages": HI, "add_generation_prompt": "false"}, "add_generation_prompt", None),
    ({"prompt": "x" * 512}, "prompt", "context_length_exceeded"),
])
async def test_bad_tokenize_requests_are_400(client: httpx.AsyncClient, body: dict[str, Any],
                                             param: str, code: str | None) -> None:
    resp = await client.post("/tokenize", json=body)
    assert_openai_error(resp, 400, code)
    assert resp.json()["error"]["param"].startswith(param), resp.text


async def test_tokenize_fits_the_context_as_a_prompt_must(client: httpx.AsyncClient) -> None:
    # A prompt needs room for one generated token: 511 of 512, as completions allow.
    ok = await client.post("/tokenize", json={"prompt": "x" * 510})
    assert ok.status_code == 200 and ok.json()["count"] == 510
    too_long = await client.post("/tokenize", json={"messages": [
        {"role": "user", "content": "x" * 600}]})
    assert_openai_error(too_long, 400, "context_length_exceeded")
    assert too_long.json()["error"]["param"] == "messages"


@pytest.mark.parametrize(("tokens", "code"), [
    ([-1], None), ([0x110000], None), ([2**70], None), ([1.0], None), ([True], None),
    (["a"], None), ("abc", None), ([65] * 600, "context_length_exceeded"),
])
async def test_bad_detokenize_requests_are_400(client: httpx.AsyncClient, tokens: Any,
                                               code: str | None) -> None:
    resp = await client.post("/detokenize", json={"model": BASE, "tokens": tokens})
    assert_openai_error(resp, 400, code)
    assert resp.json()["error"]["param"].startswith("tokens"), resp.text


async def test_max_prompt_tokens_bounds_both(tmp_path: Path) -> None:
    app = make_app(tmp_path, limits=RequestLimits(max_prompt_tokens=16))
    async with in_process(app) as c:
        assert (await c.post("/tokenize", json={"prompt": "x" * 16})).status_code == 200
        for path, body in (("/tokenize", {"prompt": "x" * 17}),
                           ("/tokenize", {"messages": [{"role": "user", "content": "x" * 9}]}),
                           ("/detokenize", {"tokens": [65] * 17})):
            resp = await c.post(path, json=body)
            assert_openai_error(resp, 400)
            assert "--max-prompt-tokens" in resp.json()["error"]["message"]


class ThreadSpy(CharTokenizer):
    def __init__(self) -> None:
        self.threads: set[int] = set()

    def encode(self, text: str, *, limit: int | None = None) -> list[int]:
        self.threads.add(threading.get_ident())
        return super().encode(text, limit=limit)

    def decode(self, token_ids: Sequence[int]) -> str:
        self.threads.add(threading.get_ident())
        return super().decode(token_ids)


async def test_tokenizing_runs_off_the_event_loop(tmp_path: Path) -> None:
    engine = FakeEngine()
    spy = engine._tokenizer = ThreadSpy()
    async with app_client(tmp_path, engine) as c:
        for path, body in (("/tokenize", {"prompt": "x"}), ("/tokenize", {"messages": HI}),
                           ("/detokenize", {"tokens": [65]})):
            assert (await c.post(path, json=body)).status_code == 200
    assert spy.threads and threading.get_ident() not in spy.threads


# --- prompt-tuning adapters: virtual tokens --------------------------------------------------


def prompt_tuning_dir(path: Path, n: int) -> Path:
    """A PROMPT_TUNING adapter for the fake base model (hidden size 96)."""
    path.mkdir(parents=True)
    save_file({"prompt_embeddings": torch.zeros(n, 96)}, str(path / "adapter_model.safetensors"))
    config = {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": n,
              "num_transformer_submodules": 1, "task_type": "CAUSAL_LM"}
    (path / "adapter_config.json").write_text(json.dumps(config))
    return path


async def test_virtual_tokens_are_reported_apart(tmp_path: Path) -> None:
    limits = replace(LIMITS, peft_types=frozenset({"LORA", "PROMPT_TUNING"}))
    options = replace(service_options(tmp_path), limits=limits)
    adapters = [("soft", prompt_tuning_dir(tmp_path / "soft", 8))]
    async with app_client(tmp_path, options=options, adapters=adapters) as c:
        card = (await c.get("/v1/models/soft")).json()
        assert card == (await listed(c))["soft"]
        assert card["kind"] == "prompt" and card["num_virtual_tokens"] == 8
        body = (await c.post("/tokenize", json={"model": "soft", "messages": HI})).json()
        # The client's tokens only, as usage.prompt_tokens counts them; the soft prompt's
        # positions beside them.
        assert body["tokens"] == template_ids(HI) and body["num_virtual_tokens"] == 8
        chat = await c.post("/v1/chat/completions",
                            json={"model": "soft", "messages": HI, "max_tokens": 2})
        assert chat.json()["usage"]["prompt_tokens"] == body["count"]


# --- keys --------------------------------------------------------------------------------


USER, SQL_TEAM, NO_BASE = "sk-user", "sk-sql", "sk-no-base"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    policy = KeyPolicy.model_validate({"keys": {
        key_id(SQL_TEAM): {"models": ["sql-*", BASE]},
        key_id(NO_BASE): {"models": ["sql-*"]},
    }})
    keys = KeyRing.of([USER, SQL_TEAM, NO_BASE], [], policy)
    adapters = [("sql-writer", make_adapter_dir(tmp_path, "a", seed=1)),
                ("extract", make_adapter_dir(tmp_path, "b", seed=2))]
    app = make_app(tmp_path, adapters=adapters, security=Security(keys=keys))
    async with in_process(app) as c:
        yield c


async def test_a_key_sees_only_the_models_it_may_use(keyed: httpx.AsyncClient) -> None:
    for key, usable in ((USER, {BASE, "sql-writer", "extract"}),
                        (SQL_TEAM, {BASE, "sql-writer"}), (NO_BASE, {"sql-writer"})):
        headers = bearer(key)
        assert set(await listed(keyed, headers=headers)) == usable
        for model in (BASE, "sql-writer", "extract"):
            calls = (keyed.get(f"/v1/models/{model}", headers=headers),
                     keyed.post("/tokenize", json={"model": model, "prompt": "x"},
                                headers=headers),
                     keyed.post("/detokenize", json={"model": model, "tokens": [65]},
                                headers=headers))
            for call in calls:
                resp = await call
                if model in usable:
                    assert resp.status_code == 200, (key, model, resp.text)
                else:
                    # As if it did not exist.
                    assert_openai_error(resp, 404, "model_not_found")
        # No model means the base model, which this key may not use either.
        if BASE not in usable:
            resp = await keyed.post("/tokenize", json={"prompt": "x"}, headers=headers)
            assert_openai_error(resp, 404, "model_not_found")


async def test_every_route_needs_a_key(keyed: httpx.AsyncClient) -> None:
    for method, path, body in (("GET", "/v1/models/sql-writer", None),
                               ("POST", "/tokenize", {"prompt": "x"}),
                               ("POST", "/detokenize", {"tokens": [65]})):
        resp = await keyed.request(method, path, json=body)
        assert_openai_error(resp, 401, "missing_api_key")


# --- hub ids: known once pulled, never pulled by a lookup ----------------------------------


REPO = "Org/Tiny-LoRA"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[FakeHub]:
    fake = FakeHub()
    fake.add(REPO, make_adapter_dir(tmp_path / "hub-src", "a", seed=11))
    with serving(fake):
        yield fake


async def test_lookups_never_pull_but_know_pulled_repos(tmp_path: Path, hub: FakeHub) -> None:
    options = replace(service_options(tmp_path),
                      hub=HubOptions(allow=("org",), autoload=True, endpoint=hub.url))
    async with app_client(tmp_path, options=options) as c:
        for call in (c.get(f"/v1/models/{REPO}"),
                     c.post("/tokenize", json={"model": REPO, "prompt": "x"}),
                     c.post("/detokenize", json={"model": REPO, "tokens": [65]})):
            assert_openai_error(await call, 404, "model_not_found")
        assert hub.downloads[REPO] == 0
        pulled = await c.post("/v1/adapters/pull", json={"repo": REPO})
        assert pulled.status_code == 201, pulled.text
        downloads = hub.downloads[REPO]
        cards = await listed(c)
        for model_id in (REPO, REPO.lower(), "org--tiny-lora"):
            card = (await c.get(f"/v1/models/{model_id}")).json()
            assert card == cards["org--tiny-lora"] | {"id": model_id, "root": model_id}
        resp = await c.post("/tokenize", json={"model": REPO, "prompt": "x"})
        assert resp.json()["tokens"] == [ord("x")]
        # A revision is a tag of its own: not pulled under "main", so not found.
        assert_openai_error(await c.get(f"/v1/models/{REPO}@main"), 404, "model_not_found")
        assert hub.downloads[REPO] == downloads


async def test_tokenize_shows_tools_to_the_template(client: httpx.AsyncClient) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    plain = await client.post("/tokenize", json={"messages": HI})
    with_tools = await client.post("/tokenize", json={"messages": HI, "tools": tools})
    assert with_tools.status_code == 200, with_tools.text
    # The fake's template writes the tools in front: more tokens, same chat after them.
    assert with_tools.json()["count"] > plain.json()["count"]
    assert with_tools.json()["tokens"][-plain.json()["count"]:] == plain.json()["tokens"]
