"""The engine on vLLM's ``AsyncLLM``, in process. The only module that imports vLLM's engine.

The GPU and CPU builds of vLLM share this code; only the wheel differs (and, on
CPU, the LoRA op fix in ``plugins/cpu_lora/``, loaded by vLLM as a plugin).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import AsyncIterator, Iterator, Mapping

import torch
from vllm import SamplingParams
from vllm.exceptions import VLLMClientError
from vllm.inputs import EmbedsPrompt, TokensPrompt
from vllm.lora.request import LoRARequest
from vllm.outputs import CompletionOutput, RequestOutput
from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError

from .hf_tokenizer import HfTokenizer
from .interface import (
    AdapterLoadError,
    AdapterSpec,
    ChoiceDelta,
    EngineError,
    EngineRequestError,
    FinishReason,
    GenerationStep,
    Residency,
    SamplingSpec,
    StructuredOutput,
    TokenLogprob,
)
from .plugins.lora_residency import METHOD as RESIDENCY_METHOD
from .plugins.parent_watch import mark_server_process
from .plugins.prefix_kv import prefix_params
from .soft_prompts import PLACEHOLDER_ID, SoftPrompts, check_prefix_file
from .tool_calls import parser_class
from .vllm_args import VllmOptions, engine_args, engine_env

log = logging.getLogger(__name__)

#: How long adapter_residency() waits for the engine. The call itself takes well under
#: a millisecond, but the engine answers between two steps, so it waits for the step in
#: progress (~25 ms decoding on 2 CPU cores; longer for a big prefill chunk).
RESIDENCY_TIMEOUT_S = 5.0





class VllmEngine:
    """``Engine`` on ``AsyncLLM``. Build with ``await VllmEngine.start(options)``."""

    def __init__(self, llm: AsyncLLM, options: VllmOptions) -> None:
        self._llm = llm
        self._options = options
        self._tokenizer = HfTokenizer(
            llm.get_tokenizer(), chat_template=options.chat_template,
            tool_parser=parser_class(options.tool_call_parser)
            if options.tool_call_parser else None)
        self._max_model_len = int(llm.model_config.max_model_len)
        dtype = llm.model_config.dtype
        assert isinstance(dtype, torch.dtype), dtype  # resolved from "auto" at start
        self._soft_prompts = SoftPrompts(int(llm.model_config.get_hidden_size()), dtype)
        #: Prefix adapters added (the workers read their tensors on first use).
        self._prefixes: set[int] = set()

    @classmethod
    def start(cls, options: VllmOptions) -> VllmEngine:
        args = engine_args(options)
        env = engine_env(options)
        log.info("starting vLLM engine for %s (dtype=%s%s)", options.model, options.dtype,
                 "".join(f", {k}={v}" for k, v in env.items()))
        # The engine's processes watch this one and end with it (plugins/parent_watch.py).
        mark_server_process()
        # The engine process starts inside from_engine_args and inherits this process's
        # environment (its workers inherit its own); this process keeps the user's.
        with _environ(env):
            llm = AsyncLLM.from_engine_args(args)
        return cls(llm, options)

    @property
    def model_name(self) -> str:
        return self._options.served_model_name

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    @property
    def max_loras(self) -> int:
        return self._options.max_loras

    @property
    def tokenizer(self) -> HfTokenizer:
        return self._tokenizer

    async def generate(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        sampling: SamplingSpec,
        adapter: AdapterSpec | None = None,
    ) -> AsyncIterator[GenerationStep]:
        try:
            params = self._sampling_params(sampling)
        except (VLLMClientError, ValueError) as exc:
            raise EngineRequestError(str(exc)) from exc
        prompt: TokensPrompt | EmbedsPrompt
        if adapter is not None and adapter.kind == "prefix":
            # Placeholders where the learned K/V go (the connector writes them), so the
            # real tokens start at position n as in PEFT; the salt keeps the version's
            # cached blocks its own.
            n = adapter.num_virtual_tokens
            if params.prompt_logprobs is not None:
                # vLLM skips every external KV load for requests with prompt logprobs:
                # the placeholders would run through the model, a silently lost prefix.
                raise EngineRequestError("prompt logprobs are not served for prefix adapters")
            prompt = TokensPrompt(prompt_token_ids=[PLACEHOLDER_ID] * n + prompt_token_ids,
                                  cache_salt=f"hotswap-prefix-{adapter.engine_id}")
            params.extra_args = {"kv_transfer_params": prefix_params(
                adapter.engine_id, str(adapter.path), n)}
            lora = None
        elif adapter is not None and adapter.kind == "prompt":
            embeds = self._soft_prompts.input(adapter, prompt_token_ids)
            prompt = EmbedsPrompt(prompt_embeds=embeds.embeds, prompt_token_ids=embeds.token_ids,
                                  prompt_is_token_ids=embeds.is_token_ids,
                                  cache_salt=embeds.cache_salt)
            lora = None
        else:
            prompt = TokensPrompt(prompt_token_ids=prompt_token_ids)
            lora = _lora_request(adapter)
        stream = self._llm.generate(prompt, params, request_id, lora_request=lora)
        try:
            async for out in stream:
                # The tokens the client sent: a soft prompt's virtual tokens are not
                # theirs (documented in the README).
                yield _to_step(out, len(prompt_token_ids))
        except VLLMClientError as exc:
            raise EngineRequestError(str(exc)) from exc
        except EngineDeadError as exc:
            raise EngineError(f"engine died: {exc}") from exc
        finally:
            # Closing our generator (client gone) closes vLLM's, whose
            # GeneratorExit handler aborts the request in the engine.
            await stream.aclose()

    @staticmethod
    def _sampling_params(sampling: SamplingSpec) -> SamplingParams:
        return SamplingParams(
            n=sampling.n,
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            stop=list(sampling.stop) or None,
            logprobs=sampling.logprobs,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
            ignore_eos=sampling.ignore_eos,
            top_k=sampling.top_k,
            min_p=sampling.min_p,
            min_tokens=sampling.min_tokens,
            repetition_penalty=sampling.repetition_penalty,
            logit_bias=dict(sampling.logit_bias) if sampling.logit_bias else None,
            stop_token_ids=list(sampling.stop_token_ids) or None,
            skip_special_tokens=sampling.skip_special_tokens,
            include_stop_str_in_output=sampling.include_stop_str_in_output,
            structured_outputs=_structured(sampling.structured),
            output_kind=RequestOutputKind.DELTA,
        )

    async def add_adapter(self, adapter: AdapterSpec) -> None:
        if adapter.kind == "prompt":
            if not self._options.prompt_adapters:
                raise AdapterLoadError(f"adapter {adapter.name!r}: prompt adapters are off "
                                       "on this server (--no-prompt-adapters)")
            await asyncio.to_thread(self._soft_prompts.load, adapter)
            return
        if adapter.kind == "prefix":
            if not self._options.prefix_adapters:
                raise AdapterLoadError(f"adapter {adapter.name!r}: prefix adapters are off "
                                       "on this server (--no-prefix-adapters)")
            await asyncio.to_thread(check_prefix_file, adapter)
            self._prefixes.add(adapter.engine_id)
            return
        try:
            await self._llm.add_lora(_require(_lora_request(adapter)))
        except EngineDeadError as exc:
            raise EngineError(f"engine died: {exc}") from exc
        except Exception as exc:
            # The engine core loads the files in its own process; whatever it raised
            # there comes back as a bare Exception carrying only the message.
            raise AdapterLoadError(f"adapter {adapter.name!r}: {_utility_message(exc)}"
                                   ) from exc

    async def remove_adapter(self, adapter: AdapterSpec) -> None:
        if adapter.kind == "prompt":
            self._soft_prompts.unload(adapter.engine_id)
            return
        if adapter.kind == "prefix":
            # The workers keep its tensors in a bounded LRU; the id is never reused.
            self._prefixes.discard(adapter.engine_id)
            return
        try:
            await self._llm.remove_lora(adapter.engine_id)
        except Exception as exc:
            raise EngineError(f"adapter {adapter.name!r}: {_utility_message(exc)}") from exc

    async def adapter_residency(self) -> Mapping[int, Residency]:
        # No cache: the answer comes from the engine loop between steps, ~0.4 ms when
        # idle, so every caller gets the slots as of the last step.
        try:
            per_worker = await asyncio.wait_for(
                self._llm.collective_rpc(RESIDENCY_METHOD), RESIDENCY_TIMEOUT_S
            )
        except TimeoutError as exc:
            raise EngineError(f"adapter residency: no answer in {RESIDENCY_TIMEOUT_S}s"
                              ) from exc
        except Exception as exc:
            raise EngineError(f"adapter residency: {exc}") from exc
        # Workers of one engine apply the same adapters in lockstep; the first speaks
        # for all (vLLM's own list_loras asserts they agree).
        found = per_worker[0] if per_worker else None
        if found is None:
            raise EngineError("adapter residency: the worker has no LoRA manager")
        active, registered = found
        # Soft prompts live in this process's memory and need no slot: "cpu".
        residency: dict[int, Residency] = {i: "cpu" for i in self._soft_prompts.loaded()}
        residency.update({i: "cpu" for i in self._prefixes})
        residency.update({int(i): "cpu" for i in registered})
        residency.update({int(i): "gpu" for i in active})
        return residency

    async def check_health(self) -> None:
        try:
            await self._llm.check_health()
        except Exception as exc:
            raise EngineError(str(exc)) from exc

    async def shutdown(self) -> None:
        self._llm.shutdown()


#: How vLLM's engine core words a utility call that raised (``EngineCore._handle_client_
#: request``); the method name says nothing to a client.
_UTILITY_FAILED = re.compile(r"^Call to \w+ method failed: ")


def _utility_message(exc: BaseException) -> str:
    return _UTILITY_FAILED.sub("", str(exc)) or type(exc).__name__


def _structured(spec: StructuredOutput | None) -> StructuredOutputsParams | None:
    if spec is None:
        return None
    return StructuredOutputsParams(
        json=dict(spec.json_schema) if spec.json_schema is not None else None,
        json_object=True if spec.json_object else None,
        regex=spec.regex,
        choice=list(spec.choice) if spec.choice is not None else None,
        grammar=spec.grammar,
    )


def _lora_request(adapter: AdapterSpec | None) -> LoRARequest | None:
    if adapter is None:
        return None
    # vLLM compares and hashes LoRARequests by lora_name alone and gathers a batch's
    # adapters in a set: two versions of one name (``x`` and ``x:stable``) in one batch
    # collapsed into one entry, the other id never got a slot, and the engine died
    # (KeyError in convert_mapping). One name per engine id (= per version) keeps them
    # apart, and one version under two names one entry.
    return LoRARequest(
        lora_name=f"hotswap-{adapter.engine_id}", lora_int_id=adapter.engine_id,
        lora_path=str(adapter.path),
    )


def _require(request: LoRARequest | None) -> LoRARequest:
    assert request is not None
    return request


@contextlib.contextmanager
def _environ(env: Mapping[str, str]) -> Iterator[None]:
    """``env`` in this process's environment for the block, the old values after."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _to_step(out: RequestOutput, prompt_tokens: int) -> GenerationStep:
    if any(c.finish_reason == "error" for c in out.outputs):
        # The engine ended this request on an internal failure (a prefix adapter whose
        # K/V could not be written, plugins/prefix_kv.py): this request fails, the
        # engine serves on.
        raise EngineError("the engine could not serve this request (see the server log)")
    queued_s = None
    stats = out.metrics if out.finished else None
    # Engine-core monotonic stamps (one clock for all processes on a host); 0 = unset.
    queued, scheduled = getattr(stats, "queued_ts", None), getattr(stats, "scheduled_ts", None)
    if queued and scheduled:
        queued_s = float(scheduled - queued)
    return GenerationStep(
        prompt_tokens=prompt_tokens,
        choices=[_to_delta(c) for c in out.outputs],
        finished=out.finished,
        queued_s=queued_s,
    )


def _to_delta(c: CompletionOutput) -> ChoiceDelta:
    logprobs: list[TokenLogprob] | None = None
    if c.logprobs is not None:
        logprobs = []
        for token_id, position in zip(c.token_ids, c.logprobs, strict=False):
            if not position:
                continue
            chosen = position[token_id]
            top = sorted(position.items(), key=lambda kv: kv[1].rank or 0)
            logprobs.append(
                TokenLogprob(
                    token=chosen.decoded_token or "",
                    token_id=token_id,
                    logprob=chosen.logprob,
                    top=tuple(
                        (lp.decoded_token or "", tid, lp.logprob)
                        for tid, lp in top
                    ),
                )
            )
    finish: FinishReason | None = None
    if c.finish_reason in ("stop", "length", "abort"):
        finish = c.finish_reason  # type: ignore[assignment]
    return ChoiceDelta(
        index=c.index,
        text=c.text,
        token_ids=list(c.token_ids),
        logprobs=logprobs,
        finish_reason=finish,
        stop_reason=c.stop_reason,
    )
