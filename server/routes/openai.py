"""OpenAI-compatible endpoints: /v1/completions, /v1/chat/completions, /v1/models."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from ..generation import (
    chat_prompt,
    completion_prompts,
    reject_unsupported,
    run,
    sampling_for,
)
from ..protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
)
from ..responses import (
    Accumulator,
    chat_chunk,
    chat_logprobs,
    chat_response,
    completion_chunk,
    completion_logprobs,
    completion_response,
    finish_reason,
    sse_stream,
    usage_chunk,
)
from ..state import CatalogDep, EngineDep

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid request"},
    404: {"model": ErrorResponse, "description": "Unknown model or adapter"},
    503: {"model": ErrorResponse, "description": "Model still loading or engine down"},
}
SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream=true"}
}

T = TypeVar("T")

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERRORS)


@router.get("/models", response_model=ModelList, summary="The base model and every adapter")
async def list_models(engine: EngineDep, catalog: CatalogDep) -> ModelList:
    base = ModelCard(
        id=catalog.base_name, created=catalog.created, root=catalog.base_name,
        max_model_len=engine.max_model_len, kind="base",
        size_bytes=catalog.registry.base_model_bytes,
    )
    entries = await catalog.entries()
    residency = await catalog.residency()
    adapters = [
        ModelCard(
            id=e.model_id, created=int(e.manifest.created_at.timestamp()),
            root=str(e.spec.path), parent=catalog.base_name,
            max_model_len=engine.max_model_len, kind=e.spec.kind,
            digest=e.manifest.digest, peft_type=e.manifest.peft_type, rank=e.manifest.rank,
            size_bytes=e.manifest.size_bytes, residency=residency.of(e.manifest.digest),
        )
        for e in entries
    ]
    return ModelList(data=[base, *adapters])


@router.post(
    "/completions", response_model=CompletionResponse, responses=SSE_DOC,
    summary="Text completion with the base model or an adapter",
)
async def create_completion(
    req: CompletionRequest, engine: EngineDep, catalog: CatalogDep
) -> Any:
    adapter = await catalog.resolve(req.model)
    reject_unsupported(req)
    prompts = completion_prompts(req, engine)
    sampling = sampling_for(req, max(len(p.token_ids) for p in prompts), engine.max_model_len)
    request_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    prefixes = [p.text if req.echo else "" for p in prompts for _ in range(req.n)]
    acc = Accumulator(len(prompts) * req.n)
    outputs = catalog.track(adapter, run(engine, request_id, prompts, sampling, adapter))
    if not req.stream:
        async for _, item in outputs:
            if isinstance(item, int):
                acc.add_prompt(item)
            else:
                acc.add(item.index, item.delta)
        return completion_response(request_id, created, req.model, acc, prefixes, req.logprobs,
                                   req.return_token_ids)

    include_usage = bool(req.stream_options and req.stream_options.include_usage)

    async def events() -> AsyncIterator[dict[str, Any]]:
        for i, prefix in enumerate(prefixes):
            if prefix:
                yield completion_chunk(request_id, created, req.model, i, prefix, None, None)
        async for _, item in outputs:
            if isinstance(item, int):
                acc.add_prompt(item)
                continue
            state = acc.choices[item.index]
            start = len(prefixes[item.index]) + len(state.text)
            acc.add(item.index, item.delta)
            d = item.delta
            lp = None
            if req.logprobs is not None and d.logprobs:
                lp = completion_logprobs(d.logprobs, start, req.logprobs)
            if d.text or d.finish_reason or lp:
                chunk = completion_chunk(request_id, created, req.model, item.index, d.text, lp,
                                         finish_reason(d))
                if include_usage:
                    chunk["usage"] = None
                yield chunk
        if include_usage:
            yield usage_chunk(request_id, created, req.model, "text_completion", acc.usage())

    outputs = await primed(outputs)
    return streaming(events())


@router.post(
    "/chat/completions", response_model=ChatCompletionResponse, responses=SSE_DOC,
    summary="Chat completion with the base model or an adapter",
)
async def create_chat_completion(
    req: ChatCompletionRequest, engine: EngineDep, catalog: CatalogDep
) -> Any:
    adapter = await catalog.resolve(req.model)
    reject_unsupported(req)
    prompt = chat_prompt(req, engine)
    sampling = sampling_for(req, len(prompt.token_ids), engine.max_model_len)
    top_k = (req.top_logprobs or 0) if req.logprobs else None
    request_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    acc = Accumulator(req.n)
    outputs = catalog.track(adapter, run(engine, request_id, [prompt], sampling, adapter))
    if not req.stream:
        async for _, item in outputs:
            if isinstance(item, int):
                acc.add_prompt(item)
            else:
                acc.add(item.index, item.delta)
        return chat_response(request_id, created, req.model, acc, top_k, req.return_token_ids)

    include_usage = bool(req.stream_options and req.stream_options.include_usage)

    def chunk(index: int, delta: dict[str, Any], lp: Any, finish: str | None) -> dict[str, Any]:
        c = chat_chunk(request_id, created, req.model, index, delta, lp, finish)
        if include_usage:
            c["usage"] = None
        return c

    async def events() -> AsyncIterator[dict[str, Any]]:
        for i in range(req.n):
            yield chunk(i, {"role": "assistant", "content": ""}, None, None)
        async for _, item in outputs:
            if isinstance(item, int):
                acc.add_prompt(item)
                continue
            acc.add(item.index, item.delta)
            d = item.delta
            lp = chat_logprobs(d.logprobs, top_k) if top_k is not None and d.logprobs else None
            if d.text or lp:
                yield chunk(item.index, {"content": d.text}, lp, None)
            if d.finish_reason:
                yield chunk(item.index, {}, None, finish_reason(d))
        if include_usage:
            yield usage_chunk(request_id, created, req.model, "chat.completion.chunk",
                              acc.usage())

    outputs = await primed(outputs)
    return streaming(events())


async def primed(items: AsyncIterator[T]) -> AsyncIterator[T]:
    """Wait for the first item before streaming: input the engine refuses then still gets
    a proper 4xx status, not an error event inside a 200 stream."""
    try:
        first = await anext(items)
    except StopAsyncIteration:
        first = None

    async def chained() -> AsyncIterator[T]:
        if first is not None:
            yield first
            async for item in items:
                yield item

    return chained()


def streaming(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    return StreamingResponse(
        sse_stream(events),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
