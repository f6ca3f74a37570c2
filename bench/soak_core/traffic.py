"""The traffic side of the soak: greedy requests (``temperature: 0``,
``return_token_ids``) to the base model, ``name`` and ``name:stable``, over completions
and chat, a few of them streams the client drops after the first chunk."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx

from .config import Prompt, SoakConfig, Target
from .oracle import BASE, Record
from .result import Live


def body(cfg: SoakConfig, model: str, prompt: Prompt, stream: bool) -> dict[str, Any]:
    common: dict[str, Any] = {"model": model, "max_tokens": cfg.max_tokens, "temperature": 0,
                              "return_token_ids": True, "stream": stream}
    if prompt.endpoint == "chat":
        return {**common, "messages": [{"role": "user", "content": prompt.text}]}
    return {**common, "prompt": prompt.text}


async def one_request(client: httpx.AsyncClient, cfg: SoakConfig, rec: Record) -> None:
    """Send ``rec``'s request and fill in what came back."""
    prompt = cfg.prompts[rec.prompt]
    path = f"/v1/{'chat/completions' if prompt.endpoint == 'chat' else 'completions'}"
    payload = body(cfg, rec.model, prompt, rec.stream)
    try:
        if rec.stream:
            async with client.stream("POST", path, json=payload) as resp:
                rec.status = resp.status_code
                if resp.status_code == 200:
                    # Leave after the first chunk: the server must abort the engine request.
                    got = False
                    async for line in resp.aiter_lines():
                        if line.startswith("data:"):
                            got = True
                            break
                    if not got:
                        rec.error_code, rec.detail = "no_chunk", "stream ended without data"
                else:
                    await resp.aread()
                    _error(rec, resp)
        else:
            resp = await client.post(path, json=payload)
            rec.status = resp.status_code
            if resp.status_code == 200:
                rec.token_ids = list(resp.json()["choices"][0]["token_ids"])
            else:
                _error(rec, resp)
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        # No answer (status None: lost), or a 200 without token ids (judged wrong).
        rec.detail = f"{type(exc).__name__}: {exc}"
    rec.received = time.monotonic()


def _error(rec: Record, resp: httpx.Response) -> None:
    try:
        rec.error_code = resp.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        rec.error_code = None
    rec.detail = resp.text[:300]


async def client_loop(no: int, client: httpx.AsyncClient, cfg: SoakConfig, target: Target,
                      names: list[str], stop: asyncio.Event, records: list[Record],
                      live: Live) -> None:
    rng = random.Random(cfg.seed * 1000 + no)
    while not stop.is_set():
        p = rng.randrange(len(cfg.prompts))
        if rng.random() < cfg.base_share:
            ref, model = BASE, target.base_name
        else:
            # Any of the names, deleted ones too: their 404s are part of the contract.
            name = rng.choice(names)
            tag = rng.choice(["latest", "stable"])
            ref, model = f"{name}:{tag}", name if tag == "latest" else f"{name}:{tag}"
        rec = Record(no, ref, model, p, rng.random() < cfg.stream_share, time.monotonic(),
                     0.0, None)
        await one_request(client, cfg, rec)
        records.append(rec)
        live.statuses[str(rec.status) if rec.status is not None else "no answer"] += 1
