"""One streaming completion, timed at the client: when each token arrived."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

from .workload import Request


@dataclass
class Result:
    index: int
    model: str
    sent: float  # perf_counter when sent
    #: perf_counter of each chunk that carried text (a chunk may carry several tokens),
    #: and of the one that finished the answer.
    chunks: list[float] = field(default_factory=list)
    output_tokens: int = 0
    prompt_tokens: int = 0
    error: str | None = None

    @property
    def ttft(self) -> float | None:
        return self.chunks[0] - self.sent if self.chunks else None

    @property
    def latency(self) -> float | None:
        return self.chunks[-1] - self.sent if self.chunks else None

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first (None for one-token answers)."""
        if len(self.chunks) < 2 or self.output_tokens < 2:
            return None
        return (self.chunks[-1] - self.chunks[0]) / (self.output_tokens - 1)


async def send(client: httpx.AsyncClient, request: Request) -> Result:
    """POST /v1/completions with ``stream: true``; every output token is forced
    (``min_tokens`` = ``max_tokens``: vLLM's extension, honoured by hotswap), so all
    servers generate the same amount of work."""
    result = Result(request.index, request.model, time.perf_counter())
    body = {"model": request.model, "prompt": request.prompt,
            "max_tokens": request.max_tokens, "min_tokens": request.max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    try:
        async with client.stream("POST", "/v1/completions", json=body) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")[:200]
                result.error = f"HTTP {resp.status_code}: {text}"
                return result
            async for line in _sse_lines(resp):
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                event = json.loads(line[len(b"data: "):])
                # The finishing chunk counts too: servers hold back text that ends inside
                # a UTF-8 character, so a short answer of such tokens (random adapters
                # make them) has no text until its last chunk, but did produce tokens.
                # vLLM's own benchmark client likewise times any chunk with choices.
                if any(c.get("text") or c.get("finish_reason")
                       for c in event.get("choices") or []):
                    result.chunks.append(time.perf_counter())
                usage = event.get("usage")
                if usage:
                    result.output_tokens = usage["completion_tokens"]
                    result.prompt_tokens = usage["prompt_tokens"]
    except httpx.HTTPError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    if result.error is None and not result.output_tokens:
        result.error = "no usage in the stream"
    return result


async def _sse_lines(resp: httpx.Response) -> AsyncIterator[bytes]:
    """The stream's lines, split on ``\n`` only. Not httpx's aiter_lines: that splits
    like str.splitlines, also on U+2028, U+0085 and the like, which servers send raw
    inside JSON strings (generated text is arbitrary) and which cut an event in two."""
    buffer = b""
    async for data in resp.aiter_bytes():
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r")
    if buffer:
        yield buffer
