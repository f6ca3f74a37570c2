"""From an OpenAI request to engine calls: prompts, sampling limits, fan-out and merge.

Everything here is engine-neutral; the routes turn the merged output stream
into a response body or SSE chunks (``responses.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from .engine.interface import AdapterSpec, ChoiceDelta, Engine, EngineRequestError, SamplingSpec
from .errors import ContextLengthExceeded, InvalidRequest, UnsupportedParameter
from .metrics import IN_FLIGHT, REQUESTS, model_label
from .protocol import ChatCompletionRequest, ChatMessage, CompletionRequest, SamplingFields

T = TypeVar("T")


@dataclass(frozen=True)
class Prompt:
    token_ids: list[int]
    #: Text form, for ``echo``.
    text: str


@dataclass(frozen=True)
class Output:
    """One choice's delta, with its global OpenAI choice index."""

    index: int
    delta: ChoiceDelta


# --- prompts ---------------------------------------------------------------


def completion_prompts(req: CompletionRequest, engine: Engine) -> list[Prompt]:
    tok = engine.tokenizer
    raw = req.prompt
    if isinstance(raw, str):
        texts: list[str] | None = [raw]
    elif raw and all(isinstance(p, str) for p in raw):
        texts = [str(p) for p in raw]
    else:
        texts = None
    if texts is not None:
        prompts = [Prompt(tok.encode(t), t) for t in texts]
        for p in prompts:
            _check_token_ids(p.token_ids, tok.vocab_size, "prompt")
        return prompts
    if raw and all(isinstance(p, int) for p in raw):
        id_lists = [[int(t) for t in raw]]  # type: ignore[arg-type]
    elif raw and all(isinstance(p, list) for p in raw):
        id_lists = [[int(t) for t in p] for p in raw]  # type: ignore[union-attr]
    else:
        raise InvalidRequest("prompt must be a string, a list of strings, or token ids",
                             param="prompt")
    # Validate before decoding: out-of-range ids must be a 400, not a decoder crash.
    for ids in id_lists:
        _check_token_ids(ids, tok.vocab_size, "prompt")
    return [Prompt(ids, tok.decode(ids)) for ids in id_lists]


def chat_prompt(req: ChatCompletionRequest, engine: Engine) -> Prompt:
    messages = [_template_message(m, i) for i, m in enumerate(req.messages)]
    ids = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    _check_token_ids(ids, engine.tokenizer.vocab_size, "messages")
    return Prompt(ids, "")


def _template_message(message: ChatMessage, i: int) -> dict[str, str]:
    if message.role == "tool":
        raise UnsupportedParameter("tool messages are not supported", param=f"messages.{i}")
    content = message.content
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        parts: list[str] = []
        for part in content:
            if part.type != "text" or not hasattr(part, "text"):
                raise UnsupportedParameter(
                    f"content part of type {part.type!r} is not supported (text only)",
                    param=f"messages.{i}.content",
                )
            parts.append(str(part.text))
        text = "".join(parts)
    # Chat templates know system/user/assistant; OpenAI's "developer" is the new system.
    role = "system" if message.role == "developer" else message.role
    return {"role": role, "content": text}


def _check_token_ids(ids: Sequence[int], vocab_size: int, param: str) -> None:
    if not ids:
        raise InvalidRequest("prompt is empty", param=param)
    bad = next((t for t in ids if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise InvalidRequest(f"token id {bad} is outside the vocabulary (0..{vocab_size - 1})",
                             param=param)


# --- sampling --------------------------------------------------------------


def reject_unsupported(req: SamplingFields) -> None:
    if isinstance(req, CompletionRequest):
        if req.suffix:
            raise UnsupportedParameter("suffix is not supported", param="suffix")
        if req.best_of is not None and req.best_of != req.n:
            raise UnsupportedParameter("best_of other than n is not supported", param="best_of")
        if req.echo and req.logprobs is not None:
            raise UnsupportedParameter("echo together with logprobs is not supported",
                                       param="echo")
    if isinstance(req, ChatCompletionRequest):
        if req.tools:
            raise UnsupportedParameter("tools are not supported", param="tools")
        if req.response_format is not None and req.response_format.type != "text":
            raise UnsupportedParameter(
                f"response_format {req.response_format.type!r} is not supported",
                param="response_format",
            )
        if req.top_logprobs is not None and not req.logprobs:
            raise InvalidRequest("top_logprobs requires logprobs to be true",
                                 param="top_logprobs")


def sampling_for(req: SamplingFields, prompt_len: int, max_model_len: int) -> SamplingSpec:
    requested = req.max_tokens
    logprobs: int | None = None
    if isinstance(req, ChatCompletionRequest):
        requested = req.max_completion_tokens or req.max_tokens
        if req.logprobs:
            logprobs = req.top_logprobs or 0
    elif isinstance(req, CompletionRequest):
        logprobs = req.logprobs
    room = max_model_len - prompt_len
    if room < 1 or (requested is not None and requested > room):
        asked = prompt_len + (requested or 1)
        raise ContextLengthExceeded(
            f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested {asked} tokens ({prompt_len} in the messages, "
            f"{requested or 1} in the completion). Please reduce the length of the messages "
            "or completion.",
            param="max_tokens",
        )
    return SamplingSpec(
        max_tokens=requested or room,
        temperature=req.temperature,
        top_p=req.top_p,
        n=req.n,
        seed=req.seed,
        stop=req.stop_list(),
        logprobs=logprobs,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        ignore_eos=req.ignore_eos,
    )


# --- running ---------------------------------------------------------------


async def run(
    engine: Engine,
    request_id: str,
    prompts: list[Prompt],
    sampling: SamplingSpec,
    adapter: AdapterSpec | None,
) -> AsyncGenerator[tuple[int, Output | int], None]:
    """Run all prompts concurrently. Yields ``(prompt_no, Output)`` for choice deltas and
    ``(prompt_no, prompt_tokens)`` once per prompt, before its first output."""
    n = sampling.n
    # Greedy decoding makes every choice identical: vLLM refuses n > 1 there, OpenAI
    # answers n copies. Generate once and copy, which is also n times cheaper.
    copies = n if sampling.temperature == 0 and n > 1 else 1
    engine_sampling = replace(sampling, n=1) if copies > 1 else sampling

    label = model_label(adapter.name if adapter else "base")

    async def one(no: int, prompt: Prompt) -> AsyncIterator[Output | int]:
        announced = False
        outcome = "error"
        IN_FLIGHT.labels(label).inc()
        try:
            async for step in engine.generate(
                f"{request_id}-{no}", prompt.token_ids, engine_sampling, adapter
            ):
                if not announced:
                    announced = True
                    yield step.prompt_tokens
                for choice in step.choices:
                    for copy in range(copies):
                        local = copy if copies > 1 else choice.index
                        yield Output(no * n + local, choice)
            outcome = "finished"
        except (GeneratorExit, asyncio.CancelledError):
            outcome = "aborted"
            raise
        finally:
            IN_FLIGHT.labels(label).dec()
            REQUESTS.labels(label, outcome).inc()

    async for item in merge([one(no, p) for no, p in enumerate(prompts)]):
        yield item


async def merge(iterators: list[AsyncIterator[T]]) -> AsyncIterator[tuple[int, T]]:
    """Interleave several async iterators as items arrive; closing the merge cancels all."""
    if len(iterators) == 1:
        async for item in iterators[0]:
            yield 0, item
        return
    queue: asyncio.Queue[tuple[int, T | BaseException | None]] = asyncio.Queue()

    async def pump(i: int, it: AsyncIterator[T]) -> None:
        try:
            async for item in it:
                await queue.put((i, item))
            await queue.put((i, None))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await queue.put((i, exc))

    tasks = [asyncio.create_task(pump(i, it)) for i, it in enumerate(iterators)]
    try:
        remaining = len(tasks)
        while remaining:
            i, got = await queue.get()
            if got is None:
                remaining -= 1
            elif isinstance(got, BaseException):
                raise got
            else:
                yield i, got
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)


__all__ = [
    "EngineRequestError",
    "Output",
    "Prompt",
    "chat_prompt",
    "completion_prompts",
    "reject_unsupported",
    "run",
    "sampling_for",
]
