"""Clients of a running server as the integration tests drive it: the adapterctl command
line (a subprocess, as users run it) and greedy completions with the official openai
client, returning token ids for exact comparison with PEFT."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import openai
from transformers import AutoTokenizer

ADAPTERCTL = Path(sys.executable).parent / "adapterctl"


def adapterctl(url: str, *args: str, timeout: float = 300, api_key: str | None = None
               ) -> subprocess.CompletedProcess[str]:
    keys = ["--api-key", api_key] if api_key else []
    return subprocess.run([str(ADAPTERCTL), "--url", url, *keys, *args],
                          capture_output=True, text=True, timeout=timeout)


def greedy_ids(url: str, model: str, ids: list[int], max_tokens: int,
               api_key: str = "unused") -> list[int]:
    oai = openai.OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0, timeout=300)
    resp = oai.completions.create(model=model, prompt=ids, max_tokens=max_tokens,
                                  temperature=0, extra_body={"return_token_ids": True})
    token_ids = resp.choices[0].token_ids  # type: ignore[attr-defined]
    assert isinstance(token_ids, list)
    return token_ids


def tokenize(base_model_dir: Path, text: str) -> list[int]:
    ids: list[int] = AutoTokenizer.from_pretrained(base_model_dir)(text)["input_ids"]
    return ids
