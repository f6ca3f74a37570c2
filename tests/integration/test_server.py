"""The real server (vLLM engine, bundled model) through the official openai client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import openai
import pytest
from support.metrics import metric, wait_for
from support.server import ServerInfo
from transformers import AutoTokenizer

pytestmark = pytest.mark.engine

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def tokenizer(base_model_dir: Path) -> object:
    return AutoTokenizer.from_pretrained(base_model_dir)


def client(server: ServerInfo) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key or "unused",
                         max_retries=0)


def test_models(server: ServerInfo) -> None:
    models = {m.id: m for m in client(server).models.list().data}
    assert set(models) == {server.base_name, "lora-a", "lora-b"}
    assert models["lora-a"].parent == server.base_name  # type: ignore[attr-defined]
    assert models[server.base_name].parent is None  # type: ignore[attr-defined]


def test_chat_answers_and_counts_tokens(server: ServerInfo, tokenizer: object) -> None:
    resp = client(server).chat.completions.create(
        model=server.base_name, messages=QUESTION, temperature=0, max_tokens=30)
    answer = resp.choices[0].message.content or ""
    assert "Paris" in answer
    assert resp.choices[0].finish_reason == "stop"
    expected_prompt = tokenizer.apply_chat_template(  # type: ignore[attr-defined]
        QUESTION, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(expected_prompt, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == len(prompt_ids)
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_chat_streaming_equals_non_streaming(server: ServerInfo) -> None:
    oai = client(server)
    whole = oai.chat.completions.create(
        model="lora-a", messages=QUESTION, temperature=0, max_tokens=24)
    stream = oai.chat.completions.create(
        model="lora-a", messages=QUESTION, temperature=0, max_tokens=24, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage is not None and whole.usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and
              c.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]


def test_completion_usage_matches_tokenizer(server: ServerInfo, tokenizer: object) -> None:
    prompt = "The three primary colours are"
    resp = client(server).completions.create(
        model=server.base_name, prompt=prompt, max_tokens=12, temperature=0, logprobs=1,
        extra_body={"ignore_eos": True})
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == len(tokenizer(prompt)["input_ids"])  # type: ignore[operator]
    assert resp.usage.completion_tokens == 12
    lp = resp.choices[0].logprobs
    assert lp is not None and lp.tokens is not None and len(lp.tokens) == 12
    assert "".join(lp.tokens) == resp.choices[0].text
    assert resp.choices[0].finish_reason == "length"


def test_completion_streaming_and_stop(server: ServerInfo) -> None:
    oai = client(server)
    stream = oai.completions.create(
        model=server.base_name, prompt="Count: 1, 2, 3,", max_tokens=40, temperature=0,
        stop=[" 7"], stream=True)
    pieces = list(stream)
    text = "".join(p.choices[0].text for p in pieces if p.choices)
    assert " 7" not in text and "6" in text
    assert pieces[-1].choices[0].finish_reason == "stop"


def test_sampling_with_seed_is_reproducible(server: ServerInfo) -> None:
    oai = client(server)
    kwargs = {"model": "lora-b", "prompt": "Once upon a time", "max_tokens": 16,
              "temperature": 1.0, "seed": 1234, "n": 2}
    first = oai.completions.create(**kwargs)  # type: ignore[call-overload]
    second = oai.completions.create(**kwargs)  # type: ignore[call-overload]
    assert [c.text for c in first.choices] == [c.text for c in second.choices]
    assert len(first.choices) == 2
    # The whole 64-bit range the schema admits is one the engine takes (no 500s).
    for seed in (2**63 - 1, -(2**63)):
        edge = oai.completions.create(**{**kwargs, "seed": seed, "max_tokens": 2})  # type: ignore[call-overload]
        assert len(edge.choices) == 2


def test_unknown_model_is_404(server: ServerInfo) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client(server).chat.completions.create(model="nope", messages=QUESTION)
    assert err.value.code == "model_not_found"


def test_context_too_long_is_400(server: ServerInfo) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client(server).completions.create(
            model=server.base_name, prompt="hello " * 2100, max_tokens=5)
    assert err.value.code == "context_length_exceeded"


def test_client_disconnect_aborts_engine_request(server: ServerInfo) -> None:
    def aborted() -> float:
        return metric(server, "hotswap_engine_requests_total", adapter="lora-a",
                       outcome="aborted")

    before = aborted()
    body = {"model": "lora-a", "prompt": "Tell me a long story.", "max_tokens": 1500,
            "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=60,
                      headers=server.headers) as resp:
        assert resp.status_code == 200
        seen = 0
        for line in resp.iter_lines():
            seen += line.startswith("data: ")
            if seen == 5:
                break
    # 1,500 tokens take far longer than this on 2 CPU cores: only an abort ends the
    # request this fast, and vLLM's own gauge shows the engine idle again.
    assert wait_for(lambda: metric(server, "vllm:num_requests_running") == 0, 10)
    assert aborted() == before + 1
    assert metric(server, "hotswap_engine_requests_in_flight", adapter="lora-a") == 0


async def test_concurrent_requests_all_complete(server: ServerInfo) -> None:
    oai = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=server.api_key or "unused",
                             max_retries=0)
    models = [server.base_name, "lora-a", "lora-b"] * 4
    results = await asyncio.gather(*[
        oai.completions.create(model=m, prompt=f"Fact number {i}:", max_tokens=8,
                               temperature=0, extra_body={"ignore_eos": True})
        for i, m in enumerate(models)
    ])
    assert all(r.usage is not None and r.usage.completion_tokens == 8 for r in results)
    assert [r.model for r in results] == models


def test_adapterctl_lists_adapters(server: ServerInfo) -> None:
    import json
    import subprocess
    import sys

    adapterctl = Path(sys.executable).parent / "adapterctl"
    key = ["--api-key", server.api_key] if server.api_key else []
    done = subprocess.run([str(adapterctl), "--url", server.url, *key, "list", "--json"],
                          capture_output=True, text=True, check=True)
    listing = json.loads(done.stdout)
    assert {a["name"] for a in listing["data"]} == {"lora-a", "lora-b"}
    # --adapter dirs are imported into the store like uploads (which dir: not said).
    assert all(a["latest"]["source"] == "path" for a in listing["data"])
    missing = subprocess.run([str(adapterctl), "--url", server.url, *key, "show", "nope"],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "nope" in missing.stderr
