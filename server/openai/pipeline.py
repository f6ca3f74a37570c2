"""The serving pipeline every OpenAI inference endpoint shares.

One request, in order::

    validate   endpoint.check + endpoint.prompts + sampling_spec: every refusal that needs
               no store read, no download and no engine load happens here, first
    resolve    ``model`` -> base model or an adapter version (ServedModels.resolve, which
               asks the caller's Principal first; a hub repo may be pulled here)
    hold       ServingTable.acquire: the adapter is loaded if needed and can not be
               retired while this request runs (Lease.release at the end, however it ends)
    generate   one engine request per prompt, merged (generate.py)
    answer     non-streaming: accumulate, endpoint.response; streaming: primed (the first
               engine step must succeed before the 200 goes out), endpoint.stream_* chunks
               framed as SSE

An endpoint (``chat/serving.py``, ``completions/serving.py``) supplies only what differs:
its refusals, how it builds prompts, which fields set max_tokens and logprobs, and the
shape of its response and chunks.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Annotated, ClassVar, Generic, TypeVar

from fastapi import Depends
from pydantic import BaseModel

from ..auth import Principal
from ..deps import ServingDep
from ..engine.interface import Engine, Tokenizer
from ..serving.models import ServedModels
from ..serving.table import Lease, ServingTable
from .accumulate import Accumulator, ChoiceState
from .generate import Output, PromptTokens, generate
from .prompts import Prompt
from .protocol import SamplingFields, Usage
from .sampling import sampling_spec
from .streaming import SSEResponse, primed, sse_events

R = TypeVar("R", bound=SamplingFields)


@dataclass(frozen=True)
class Call(Generic[R]):
    """One request on its way through the pipeline."""

    req: R
    request_id: str
    created: int
    prompts: list[Prompt]

    @property
    def num_choices(self) -> int:
        return len(self.prompts) * self.req.n


class Endpoint(ABC, Generic[R]):
    """What one OpenAI endpoint adds to the shared pipeline."""

    #: Prefix of response ids ("cmpl", "chatcmpl").
    id_prefix: ClassVar[str]

    @abstractmethod
    def check(self, req: R) -> None:
        """Refuse what the schema admits but this server can not honour (400)."""

    @abstractmethod
    def prompts(self, req: R, tokenizer: Tokenizer) -> list[Prompt]:
        """The engine's input: token ids, checked against the vocabulary."""

    @abstractmethod
    def max_tokens(self, req: R) -> int | None: ...

    @abstractmethod
    def logprobs(self, req: R) -> int | None:
        """Top alternatives to report per token; None: no logprobs."""

    @abstractmethod
    def response(self, call: Call[R], acc: Accumulator) -> BaseModel: ...

    def stream_start(self, call: Call[R]) -> Sequence[BaseModel]:
        """Chunks before the first engine output (roles, echoed prompts)."""
        return ()

    @abstractmethod
    def stream_delta(self, call: Call[R], out: Output, before: ChoiceState
                     ) -> Sequence[BaseModel]:
        """Chunks for one engine delta; ``before`` is its choice's state without it."""

    @abstractmethod
    def usage_chunk(self, call: Call[R], usage: Usage) -> BaseModel: ...


class Pipeline:
    def __init__(self, engine: Engine, models: ServedModels, table: ServingTable) -> None:
        self._engine = engine
        self._models = models
        self._table = table

    async def serve(self, endpoint: Endpoint[R], req: R, principal: Principal
                    ) -> BaseModel | SSEResponse:
        # validate
        endpoint.check(req)
        prompts = endpoint.prompts(req, self._engine.tokenizer)
        sampling = sampling_spec(
            req, max_tokens=endpoint.max_tokens(req), logprobs=endpoint.logprobs(req),
            prompt_len=max(len(p.token_ids) for p in prompts),
            max_model_len=self._engine.max_model_len,
        )
        # resolve, hold
        adapter = await self._models.resolve(req.model, principal)
        lease = await self._table.acquire(adapter)
        call = Call(req, f"{endpoint.id_prefix}-{uuid.uuid4().hex}", int(time.time()), prompts)
        streaming = False
        try:
            outputs = generate(self._engine, call.request_id, prompts, sampling, adapter)
            acc = Accumulator(call.num_choices)
            if not req.stream:
                # Closed at once if this stops early (an error, a cancelled request):
                # the engine aborts now.
                async with contextlib.aclosing(outputs):
                    async for item in outputs:
                        _add(acc, item)
                return endpoint.response(call, acc)
            stream = await primed(outputs)
            streaming = True
        finally:
            if not streaming:
                await lease.release()

        async def close() -> None:
            await stream.aclose()
            await lease.release()

        events = self._events(endpoint, call, stream, acc, lease)
        return SSEResponse(sse_events(events, include_usage=req.include_usage), close)

    async def _events(self, endpoint: Endpoint[R], call: Call[R],
                      outputs: AsyncGenerator[Output | PromptTokens, None], acc: Accumulator,
                      lease: Lease) -> AsyncGenerator[BaseModel, None]:
        try:
            for chunk in endpoint.stream_start(call):
                yield chunk
            async for item in outputs:
                if isinstance(item, PromptTokens):
                    acc.add_prompt(item.count)
                    continue
                chunks = endpoint.stream_delta(call, item, acc.choices[item.index])
                acc.add(item.index, item.delta)
                for chunk in chunks:
                    yield chunk
            if call.req.include_usage:
                yield endpoint.usage_chunk(call, acc.usage())
        finally:
            await outputs.aclose()
            await lease.release()


def _add(acc: Accumulator, item: Output | PromptTokens) -> None:
    if isinstance(item, PromptTokens):
        acc.add_prompt(item.count)
    else:
        acc.add(item.index, item.delta)


def get_pipeline(serving: ServingDep) -> Pipeline:
    return Pipeline(serving.engine, serving.models, serving.table)


PipelineDep = Annotated[Pipeline, Depends(get_pipeline)]
