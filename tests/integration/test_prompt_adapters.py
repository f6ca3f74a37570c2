"""Prompt tuning, P-tuning and prefix tuning on the session's engine: uploaded with
adapterctl, served through vLLM's prompt-embeddings input (soft prompts) and a KV
connector (prefixes), and equal to PEFT token for token (float32, greedy) — alone, on
chat, and in one concurrent burst with the base model and a LoRA."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from support.clients import adapterctl
from support.peft_ref import make_prompt_adapter, peft_greedy
from support.server import ServerInfo
from transformers import AutoTokenizer

pytestmark = pytest.mark.engine

PROMPTS = ["The quick brown fox", "def fibonacci(n):", "In 1969, the first humans"]
CHAT = [{"role": "user", "content": "Name a colour."}]
MAX_TOKENS = 12
#: name -> (PEFT type, virtual tokens, seed)
ADAPTERS = {"soft-a": ("PROMPT_TUNING", 8, 11), "ptune-a": ("P_TUNING", 12, 12),
            "prefix-a": ("PREFIX_TUNING", 8, 13)}
KIND = {"PROMPT_TUNING": "prompt", "P_TUNING": "prompt", "PREFIX_TUNING": "prefix"}


@pytest.fixture(scope="module")
def tokenizer(base_model_dir: Path) -> AutoTokenizer:
    return AutoTokenizer.from_pretrained(base_model_dir)


@pytest.fixture(scope="module")
def prompt_ids(tokenizer: AutoTokenizer) -> list[list[int]]:
    return [tokenizer(p)["input_ids"] for p in PROMPTS]


@pytest.fixture(scope="module")
def chat_ids(tokenizer: AutoTokenizer) -> list[int]:
    # What the server feeds the engine for CHAT: the template's text, no extra specials.
    text = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


@pytest.fixture(scope="module")
def uploaded(server: ServerInfo, base_model_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    root = tmp_path_factory.mktemp("prompt-adapters")
    dirs = {}
    try:
        for name, (peft_type, n, seed) in ADAPTERS.items():
            path = make_prompt_adapter(base_model_dir, root / name, peft_type=peft_type,
                                       num_virtual_tokens=n, seed=seed)
            up = adapterctl(server.url, "upload", str(path), "--name", name,
                            api_key=server.api_key)
            assert up.returncode == 0, up.stderr
            assert f"{peft_type}, {n} virtual tokens" in up.stdout, up.stdout
            dirs[name] = path
        yield dirs
    finally:
        # The session server is shared: later modules expect its adapters as they were.
        for name in dirs:
            gone = adapterctl(server.url, "delete", name, api_key=server.api_key)
            assert gone.returncode == 0, gone.stderr


@pytest.fixture(scope="module")
def reference(server: ServerInfo, base_model_dir: Path, uploaded: dict[str, Path],
              prompt_ids: list[list[int]], chat_ids: list[int]
              ) -> dict[str, list[list[int]]]:
    """Per model: PEFT's greedy ids for each of PROMPTS, then for the chat."""
    refs = {}
    for model, path in [(server.base_name, None), ("lora-a", server.adapters["lora-a"]),
                        *uploaded.items()]:
        refs[model] = peft_greedy(base_model_dir, path, [*prompt_ids, chat_ids], MAX_TOKENS)
    return refs


def _client(server: ServerInfo) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=server.api_key or "unused",
                              max_retries=0, timeout=300)


async def _completion(oai: openai.AsyncOpenAI, model: str, ids: list[int]
                      ) -> tuple[list[int], int]:
    resp = await oai.completions.create(model=model, prompt=ids, max_tokens=MAX_TOKENS,
                                        temperature=0, extra_body={"return_token_ids": True})
    token_ids = resp.choices[0].token_ids  # type: ignore[attr-defined]
    assert resp.usage is not None
    return list(token_ids), resp.usage.prompt_tokens


async def _chat(oai: openai.AsyncOpenAI, model: str) -> list[int]:
    resp = await oai.chat.completions.create(
        model=model, messages=CHAT, max_tokens=MAX_TOKENS, temperature=0,  # type: ignore[arg-type]
        extra_body={"return_token_ids": True})
    return list(resp.choices[0].token_ids)  # type: ignore[attr-defined]


def test_adapters_change_the_output(server: ServerInfo,
                                        reference: dict[str, list[list[int]]]) -> None:
    # Otherwise the equalities below would prove nothing about the soft prompts.
    for name in ADAPTERS:
        assert reference[name] != reference[server.base_name], name
    assert len({str(reference[name]) for name in ADAPTERS}) == len(ADAPTERS)


async def test_each_prompt_adapter_equals_peft(
        server: ServerInfo, prompt_ids: list[list[int]],
        reference: dict[str, list[list[int]]]) -> None:
    oai = _client(server)
    for name in ADAPTERS:
        for ids, want in zip(prompt_ids, reference[name], strict=False):
            got, prompt_tokens = await _completion(oai, name, ids)
            assert got == want, name
            # usage counts what the client sent, not the virtual tokens.
            assert prompt_tokens == len(ids)
        assert await _chat(oai, name) == reference[name][-1], name


async def test_mixed_burst_equals_peft(server: ServerInfo, prompt_ids: list[list[int]],
                                       reference: dict[str, list[list[int]]]) -> None:
    """Base, LoRA and both prompt adapters at once: the engine batches them together."""
    oai = _client(server)
    jobs = [(model, i) for model in reference for i in range(len(prompt_ids))] * 2
    got = await asyncio.gather(*(_completion(oai, m, prompt_ids[i]) for m, i in jobs))
    for (model, i), (ids, _) in zip(jobs, got, strict=True):
        assert ids == reference[model][i], (model, i)
    chats = await asyncio.gather(*(_chat(oai, m) for m in reference))
    assert chats == [reference[m][-1] for m in reference]


def test_listings_show_the_kind(server: ServerInfo, uploaded: dict[str, Path]) -> None:
    models = httpx.get(f"{server.url}/v1/models", headers=server.headers).json()["data"]
    cards = {m["id"]: m for m in models}
    for name, (peft_type, n, _) in ADAPTERS.items():
        card = cards[name]
        assert (card["kind"], card["peft_type"], card["num_virtual_tokens"]) == \
            (KIND[peft_type], peft_type, n)
        assert card["residency"] in ("cpu", "disk")
    assert cards["lora-a"]["kind"] == "lora"
    listing = adapterctl(server.url, "list", "--json", api_key=server.api_key)
    entries = {a["name"]: a for a in json.loads(listing.stdout)["data"]}
    assert entries["ptune-a"]["latest"]["num_virtual_tokens"] == 12


async def test_virtual_tokens_count_against_the_context(
        server: ServerInfo, tokenizer: AutoTokenizer) -> None:
    """A prompt that fits the context alone but not with the soft prompt: 400 naming the
    virtual tokens, not an engine error."""
    ids = [tokenizer.eos_token_id or 0] * 2040  # the session server's context is 2048
    resp = httpx.post(f"{server.url}/v1/completions", headers=server.headers, timeout=60,
                      json={"model": "ptune-a", "prompt": ids, "max_tokens": 1})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert "12 virtual tokens of the adapter" in error["message"]
    base = httpx.post(f"{server.url}/v1/completions", headers=server.headers, timeout=60,
                      json={"model": server.base_name, "prompt": ids, "max_tokens": 1})
    assert base.status_code == 200, base.text
