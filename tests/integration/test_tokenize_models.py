"""``GET /v1/models/{id}``, ``POST /tokenize`` and ``POST /detokenize`` on the real server
(vLLM engine, bundled model): the official client's ``models.retrieve``, ids equal to the
Hugging Face tokenizer's, counts equal to what completions report, and no hub pulls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from support.fake_hub import FakeHub
from support.http import assert_openai_error
from support.server import ServerInfo
from transformers import AutoTokenizer

pytestmark = pytest.mark.engine

MESSAGES = [{"role": "system", "content": "You answer in one word."},
            {"role": "user", "content": "What is the capital of France? Ünïcödé, 東京."}]
PROMPT = "The three primary colours are red, ünïcödé and 東京"


@pytest.fixture(scope="module")
def tokenizer(base_model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(base_model_dir)


def client(server: ServerInfo) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key or "unused",
                         max_retries=0)


def post(server: ServerInfo, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, headers=server.headers, timeout=60)


def ok(resp: httpx.Response) -> Any:
    assert resp.status_code == 200, resp.text
    return resp.json()


# --- GET /v1/models/{id} ---------------------------------------------------------------


def test_retrieve_base_and_adapters(server: ServerInfo) -> None:
    oai = client(server)
    listed = {m["id"]: m for m in ok(httpx.get(f"{server.url}/v1/models",
                                                headers=server.headers))["data"]}
    base = oai.models.retrieve(server.base_name)
    assert base.id == server.base_name and base.object == "model"
    assert base.model_dump(exclude_unset=True) == listed[server.base_name]
    for name, rank in (("lora-a", 8), ("lora-b", 16)):
        card = oai.models.retrieve(name)
        # Residency is the engine's word at each call; the rest is the listing's.
        same = {k: v for k, v in card.model_dump(exclude_unset=True).items()
                if k != "residency"}
        assert same == {k: v for k, v in listed[name].items() if k != "residency"}
        extra = card.model_extra or {}
        assert extra["parent"] == server.base_name and extra["kind"] == "lora"
        assert extra["rank"] == rank and extra["peft_type"] == "LORA"
        assert extra["residency"] in ("gpu", "cpu", "disk")


def test_retrieve_unknown_is_not_found_and_pulls_nothing(server: ServerInfo,
                                                         fake_hub: FakeHub) -> None:
    # The session serves --hub-allow testorg --hub-autoload: a request naming this repo
    # would pull it; reading about it must not.
    repo = "testorg/retrieve-only"
    fake_hub.add(repo, server.adapters["lora-a"])
    oai = client(server)
    for model_id in ("no-such-adapter", "lora-a:no-such-tag", repo):
        with pytest.raises(openai.NotFoundError) as err:
            oai.models.retrieve(model_id)
        assert err.value.code == "model_not_found"
    for path, body in (("/tokenize", {"prompt": "x"}), ("/detokenize", {"tokens": [1]})):
        assert_openai_error(post(server, path, {"model": repo, **body}), 404,
                            "model_not_found")
    assert fake_hub.downloads[repo] == 0


# --- POST /tokenize, /detokenize -----------------------------------------------------------


def test_tokenize_prompt_is_the_tokenizers_and_completions_count(server: ServerInfo,
                                                                 tokenizer: Any) -> None:
    expected = tokenizer(PROMPT)["input_ids"]
    for model in (server.base_name, "lora-a"):
        body = ok(post(server, "/tokenize", {"model": model, "prompt": PROMPT}))
        assert body == {"count": len(expected), "max_model_len": 2048, "tokens": expected,
                        "num_virtual_tokens": 0}
    done = client(server).completions.create(model="lora-b", prompt=PROMPT, max_tokens=1)
    assert done.usage is not None and done.usage.prompt_tokens == len(expected)


def test_tokenize_messages_is_what_chat_counts(server: ServerInfo, tokenizer: Any) -> None:
    text = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    expected = tokenizer(text, add_special_tokens=False)["input_ids"]
    oai = client(server)
    for model in (server.base_name, "lora-a"):
        body = ok(post(server, "/tokenize", {"model": model, "messages": MESSAGES}))
        assert body["tokens"] == expected and body["count"] == len(expected)
        chat = oai.chat.completions.create(model=model, messages=MESSAGES,  # type: ignore[arg-type]
                                           max_tokens=1)
        assert chat.usage is not None and chat.usage.prompt_tokens == body["count"]
    open_turn = ok(post(server, "/tokenize", {"messages": MESSAGES,
                                               "add_generation_prompt": False}))
    text = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=False, tokenize=False)
    assert open_turn["tokens"] == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_detokenize_round_trips(server: ServerInfo, tokenizer: Any) -> None:
    ids = ok(post(server, "/tokenize", {"prompt": PROMPT}))["tokens"]
    assert ok(post(server, "/detokenize", {"model": "lora-b", "tokens": ids})) == {
        "prompt": PROMPT}
    # Chat ids come back without the template's special tokens, as completions' echo
    # shows a prompt.
    chat_ids = ok(post(server, "/tokenize", {"messages": MESSAGES}))["tokens"]
    text = ok(post(server, "/detokenize", {"tokens": chat_ids}))["prompt"]
    assert text == tokenizer.decode(chat_ids, skip_special_tokens=True)
    assert MESSAGES[1]["content"] in text


def test_bad_input_is_400(server: ServerInfo, tokenizer: Any) -> None:
    vocab = len(tokenizer)
    for path, body, code in (
        ("/detokenize", {"tokens": [vocab]}, None),
        ("/detokenize", {"tokens": [-1]}, None),
        ("/detokenize", {"tokens": [1] * 2048}, "context_length_exceeded"),
        ("/tokenize", {"prompt": "word " * 5000}, "context_length_exceeded"),
        ("/tokenize", {"prompt": "x", "return_token_strs": True}, "unsupported_parameter"),
        ("/tokenize", {"messages": MESSAGES, "chat_template": "{{ 1 }}"},
         "unsupported_parameter"),
        ("/tokenize", {}, None),
    ):
        assert_openai_error(post(server, path, body), 400, code)
    assert ok(post(server, "/detokenize", {"tokens": [vocab - 1]}))["prompt"] is not None
