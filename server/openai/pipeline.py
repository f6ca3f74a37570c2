"""The serving pipeline every OpenAI inference endpoint shares.

One request, in order::

    validate   endpoint.check, the request's size (prompts, choices), its slots in the
               server's bound of sequences in flight (429 past it), then endpoint.prompts
               (tokenizing and chat templating, in one worker thread: never on the event
               loop) and sampling_spec: every refusal the request as sent earns, with no
               store read, no download and no engine load, happens here, first
    resolve    ``model`` -> base model or an adapter version (ServedModels.resolve_served,
               which asks the caller's Principal first; a hub repo may be pulled here)
    defaults   the version's task defaults (``hotswap.json``, defaults.py) fill the
               fields the request left unset; what they change is prepared again (a
               default system prompt: the prompt is templated again; a default
               response_format: its constraint), and sampling_spec is redone with them
               and the adapter's virtual tokens
    hold       ServingTable.acquire: the adapter is loaded if needed and can not be
               retired while this request runs (Lease.release at the end, however it ends)
    generate   one engine request per prompt, merged (generate.py)
    answer     non-streaming: accumulate (aborted at once if the client goes away),
               endpoint.response; streaming: primed (the first engine step must succeed
               before the 200 goes out), endpoint.stream_* chunks framed as SSE

An endpoint (``chat/serving.py``, ``completions/serving.py``) supplies only what differs:
its refusals, how it builds prompts, which fields set max_tokens and logprobs, and the
shape of its response and chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Generic, TypeVar

import anyio.to_thread
from fastapi import Depends, Request
from pydantic import BaseModel
from starlette.types import Receive

from ..auth import Principal
from ..deps import AppState, ServingDep, StateDep
from ..engine.interface import SamplingSpec, StructuredOutput, Tokenizer
from ..errors import ClientDisconnected, InvalidRequest, UnsupportedParameter, classify
from ..limits import RequestLimits
from ..metrics.labels import BASE
from ..metrics.requests import LABELS, record_request
from ..serving.table import Lease
from .accumulate import Accumulator, ChoiceState
from .defaults import CONSTRAINT_FIELDS, PROMPT_FIELDS, with_defaults
from .generate import Output, PromptTokens, generate
from .prompts import Prompt, TokenBudget
from .protocol import SamplingFields, Usage
from .sampling import sampling_spec
from .streaming import SSEResponse, primed, sse_events
from .structured import structured_output

R = TypeVar("R", bound=SamplingFields)
T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[R]):
    """One request on its way through the pipeline."""

    req: R
    request_id: str
    created: int
    prompts: list[Prompt]
    #: The model's tokenizer (endpoints that read tool calls ask it for a parser).
    tokenizer: Tokenizer
    #: What an endpoint keeps while a stream runs (per-choice parsers).
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def num_choices(self) -> int:
        return len(self.prompts) * self.req.n


class Endpoint(ABC, Generic[R]):
    """What one OpenAI endpoint adds to the shared pipeline."""

    #: Prefix of response ids ("cmpl", "chatcmpl").
    id_prefix: ClassVar[str]
    #: The field that holds the prompts (named in refusals).
    prompt_param: ClassVar[str]
    #: The ``endpoint`` label of its metrics ("chat", "completions").
    metric_name: ClassVar[str]

    @abstractmethod
    def check(self, req: R) -> None:
        """Refuse what the schema admits but this server can not honour (400)."""

    @abstractmethod
    def count_prompts(self, req: R) -> int:
        """How many prompts the request holds, from its shape (before tokenizing)."""

    @abstractmethod
    def prompts(self, req: R, tokenizer: Tokenizer, budget: TokenBudget) -> list[Prompt]:
        """The engine's input: token ids, checked against the vocabulary and refused
        (``budget``) at a cost bounded by the budget, not by the text. Runs in a worker
        thread (tokenizing a long prompt takes milliseconds)."""

    def structured(self, req: R) -> StructuredOutput | None:
        """The constraint on the output (``response_format``, ``structured_outputs``).
        Runs in the worker thread with ``prompts``: checking a schema takes CPU time."""
        return structured_output(req.response_format, req.structured_outputs)

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

    def frame(self, call: Call[R], events: AsyncGenerator[BaseModel, None]
              ) -> AsyncGenerator[str, None]:
        """The stream's text: ``data:`` chunks and ``data: [DONE]`` (chat, completions;
        the Responses API frames typed events its own way)."""
        return sse_events(events, include_usage=call.req.include_usage)


class Pipeline:
    def __init__(self, serving: ServingDep, state: AppState, receive: Receive) -> None:
        self._engine = serving.engine
        self._models = serving.models
        self._table = serving.table
        self._state = state
        self._receive = receive

    async def serve(self, endpoint: Endpoint[R], req: R, principal: Principal
                    ) -> BaseModel | SSEResponse:
        """The answer, counted per adapter and status class once it is known (for a
        stream: when its 200 goes out)."""
        labels: list[tuple[str, str]] = []  # set by _serve once ``model`` is resolved
        try:
            answer = await self._serve(endpoint, req, principal, labels)
        except BaseException as exc:
            # CancelledError and the like: the client went away (nginx's 499).
            status = classify(exc).status if isinstance(exc, Exception) else 499
            fallback = (BASE, BASE) if req.model == self._models.base_name else (
                LABELS.existing(req.model.split(":", 1)[0]))  # name:tag -> name
            record_request(labels[0] if labels else fallback, endpoint.metric_name, status)
            raise
        record_request(labels[0], endpoint.metric_name, 200)
        return answer

    async def _serve(self, endpoint: Endpoint[R], req: R, principal: Principal,
                     labels: list[tuple[str, str]]) -> BaseModel | SSEResponse:
        limits = self._state.limits
        # validate: the shape, then the slots, then the CPU work (in the tokenizer's thread)
        check_shared(req)
        endpoint.check(req)
        count = endpoint.count_prompts(req)
        check_size(count, req.n, limits)
        slots = self._state.in_flight.take(principal.key_id, count * req.n)
        lease: Lease | None = None
        streaming = False
        try:
            tokenizer = self._engine.tokenizer
            budget = TokenBudget(limits.max_prompt_tokens, self._engine.max_model_len,
                                 endpoint.prompt_param)

            async def prepare(req: R) -> tuple[list[Prompt], StructuredOutput | None]:
                def work() -> tuple[list[Prompt], StructuredOutput | None]:
                    return endpoint.prompts(req, tokenizer, budget), endpoint.structured(req)

                prompts, structured = await anyio.to_thread.run_sync(
                    work, limiter=self._state.tokenizing)
                total = sum(len(p.token_ids) for p in prompts)
                if total > limits.max_prompt_tokens:
                    raise InvalidRequest(
                        f"the prompts hold {total} tokens; at most {limits.max_prompt_tokens}"
                        " per request (--max-prompt-tokens)", param=endpoint.prompt_param)
                return prompts, structured

            def sampling_with(req: R, prompts: list[Prompt], structured: StructuredOutput | None,
                              virtual_tokens: int, filled: frozenset[str] = frozenset()
                              ) -> SamplingSpec:
                max_tokens, default = endpoint.max_tokens(req), limits.default_max_tokens
                if "max_tokens" in filled:
                    # The adapter's default, not the client's: like --default-max-tokens
                    # it gives way to the room the prompt leaves (no 400 for a field the
                    # client never sent).
                    max_tokens, default = None, max_tokens
                return sampling_spec(
                    req, max_tokens=max_tokens, logprobs=endpoint.logprobs(req),
                    prompt_len=max(len(p.token_ids) for p in prompts),
                    max_model_len=self._engine.max_model_len,
                    vocab_size=tokenizer.vocab_size,
                    default_max_tokens=default,
                    virtual_tokens=virtual_tokens, structured=structured,
                )

            prompts, structured = await prepare(req)
            sampling = sampling_with(req, prompts, structured, 0)
            # resolve
            served = await self._models.resolve_served(req.model, principal)
            adapter = None if served is None else served.spec
            # The adapter's name, not the string sent: hub ids match in any case, and
            # every tag of an adapter shares its label (bounded by adapter names).
            labels.append(LABELS.of(None if adapter is None else adapter.name,
                                    BASE if adapter is None else adapter.kind))
            # defaults: the fields the request left unset, from the version's hotswap.json
            req, filled = with_defaults(req, None if served is None else served.defaults)
            if filled & PROMPT_FIELDS:
                prompts, structured = await prepare(req)
            elif filled & CONSTRAINT_FIELDS:
                structured = await anyio.to_thread.run_sync(
                    endpoint.structured, req, limiter=self._state.tokenizing)
            virtual_tokens = 0 if adapter is None else adapter.num_virtual_tokens
            if filled or virtual_tokens:
                sampling = sampling_with(req, prompts, structured, virtual_tokens, filled)
            # hold
            lease = await self._table.acquire(adapter)
            call = Call(req, f"{endpoint.id_prefix}-{uuid.uuid4().hex}", int(time.time()),
                        prompts, tokenizer)
            outputs = generate(self._engine, call.request_id, prompts, sampling, adapter,
                               labels[0])
            acc = Accumulator(call.num_choices)
            if not req.stream:
                await self._unless_gone(_collect(outputs, acc))
                return endpoint.response(call, acc)
            stream = await primed(outputs)
            streaming = True
        finally:
            if not streaming:
                slots.release()
                if lease is not None:
                    await lease.release()
        held = lease

        async def close() -> None:
            await stream.aclose()
            # A stream whose body never started never entered ``primed``'s wrapper, so
            # closing that does not reach the engine requests: close them too (no-op
            # when already closed).
            await outputs.aclose()
            await held.release()
            slots.release()

        events = self._events(endpoint, call, stream, acc, held)
        return SSEResponse(endpoint.frame(call, events), close)

    async def _unless_gone(self, work: Awaitable[T]) -> T:
        """``work``, cancelled (so the engine aborts) as soon as the client disconnects:
        a non-streaming request writes nothing until the end, so without this a gone
        client is only noticed after the whole generation."""
        task = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(_disconnected(self._receive))
        try:
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled():
            raise ClientDisconnected("the client went away before the answer was ready")
        return task.result()

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


def check_shared(req: SamplingFields) -> None:
    """Refusals every endpoint shares."""
    if req.store:
        raise UnsupportedParameter("store: true is not supported: this server keeps no "
                                   "completions", param="store")
    if req.stream_options is not None and not req.stream:
        raise InvalidRequest("stream_options is only read with stream: true",
                             param="stream_options")


def check_size(prompts: int, n: int, limits: RequestLimits) -> None:
    if prompts > limits.max_prompts:
        raise InvalidRequest(f"{prompts} prompts in one request; at most "
                             f"{limits.max_prompts} (--max-prompts)", param="prompt")
    if prompts * n > limits.max_choices:
        raise InvalidRequest(f"{prompts} prompt(s) x n={n} asks for {prompts * n} "
                             f"sequences; at most {limits.max_choices} (--max-choices)",
                             param="n")


async def _collect(outputs: AsyncGenerator[Output | PromptTokens, None], acc: Accumulator
                   ) -> None:
    # Closed at once if this stops early (an error, a cancelled request): the engine
    # aborts now.
    async with contextlib.aclosing(outputs):
        async for item in outputs:
            if isinstance(item, PromptTokens):
                acc.add_prompt(item.count)
            else:
                acc.add(item.index, item.delta)


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone (the body has been read by then)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def get_pipeline(request: Request, serving: ServingDep, state: StateDep) -> Pipeline:
    return Pipeline(serving, state, request.receive)


PipelineDep = Annotated[Pipeline, Depends(get_pipeline)]
