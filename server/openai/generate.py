"""Fan a request out to the engine (one engine request per prompt, ``n`` choices each)
and merge the output streams back into one, with OpenAI's global choice indexes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from typing import TypeVar

from ..engine.interface import AdapterSpec, ChoiceDelta, Engine, SamplingSpec
from ..metrics.requests import IN_FLIGHT, EngineRequestTimer
from .prompts import Prompt

T = TypeVar("T")


@dataclass(frozen=True)
class Output:
    """One choice's delta, with its global OpenAI choice index."""

    index: int
    delta: ChoiceDelta


@dataclass(frozen=True)
class PromptTokens:
    """A prompt's token count, yielded once per prompt before its first output."""

    count: int


async def generate(
    engine: Engine,
    request_id: str,
    prompts: list[Prompt],
    sampling: SamplingSpec,
    adapter: AdapterSpec | None,
    labels: tuple[str, str],
) -> AsyncGenerator[Output | PromptTokens, None]:
    """Run all prompts concurrently; closing this aborts every engine request.
    ``labels``: the request's ``(adapter, type)`` metric labels."""
    n = sampling.n
    # Greedy decoding makes every choice identical: vLLM refuses n > 1 there, OpenAI
    # answers n copies. Generate once and copy, which is also n times cheaper.
    copies = n if sampling.temperature == 0 and n > 1 else 1
    engine_sampling = replace(sampling, n=1) if copies > 1 else sampling

    async def one(no: int, prompt: Prompt) -> AsyncGenerator[Output | PromptTokens, None]:
        announced = False
        outcome = "error"
        prompt_tokens = returned = 0
        queued_s: float | None = None
        timer = EngineRequestTimer(*labels)
        IN_FLIGHT.labels(*labels).inc()
        try:
            async for step in engine.generate(
                f"{request_id}-{no}", prompt.token_ids, engine_sampling, adapter
            ):
                if not announced:
                    announced = True
                    prompt_tokens = step.prompt_tokens  # usage counts a prompt once
                    yield PromptTokens(step.prompt_tokens)
                for choice in step.choices:
                    timer.tokens(choice.index, len(choice.token_ids))
                    returned += len(choice.token_ids) * copies
                queued_s = step.queued_s if step.queued_s is not None else queued_s
                for choice in step.choices:
                    for copy in range(copies):
                        local = copy if copies > 1 else choice.index
                        yield Output(no * n + local, choice)
            outcome = "finished"
        except (GeneratorExit, asyncio.CancelledError):
            outcome = "aborted"
            raise
        finally:
            IN_FLIGHT.labels(*labels).dec()
            timer.finish(prompt_tokens=prompt_tokens, returned_tokens=returned,
                         outcome=outcome, queued_s=queued_s)

    async for item in merge([one(no, p) for no, p in enumerate(prompts)]):
        yield item


async def merge(iterators: list[AsyncGenerator[T, None]]) -> AsyncGenerator[T, None]:
    """Interleave several async generators as items arrive; closing the merge closes all."""
    if len(iterators) == 1:
        async with contextlib.aclosing(iterators[0]) as only:
            async for item in only:
                yield item
        return
    queue: asyncio.Queue[T | BaseException | None] = asyncio.Queue()

    async def pump(it: AsyncGenerator[T, None]) -> None:
        try:
            async for item in it:
                await queue.put(item)
            await queue.put(None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await queue.put(exc)

    tasks = [asyncio.create_task(pump(it)) for it in iterators]
    try:
        remaining = len(tasks)
        while remaining:
            got = await queue.get()
            if got is None:
                remaining -= 1
            elif isinstance(got, BaseException):
                raise got
            else:
                yield got
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
