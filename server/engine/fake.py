"""A deterministic engine for HTTP-layer unit tests. Never used to claim a feature works.

Tokens are characters (id = code point). The answer for a request is
``"<model> answers: <prompt tail>"`` repeated up to ``max_tokens`` characters,
one token per step, so tests can predict text, token counts, stops and
logprobs exactly.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from .interface import (
    AdapterLoadError,
    AdapterSpec,
    ChoiceDelta,
    EngineError,
    GenerationStep,
    PromptTooLong,
    Residency,
    SamplingSpec,
    StructuredOutput,
    TokenLogprob,
)

EOS = "\x00"


class CharTokenizer:
    vocab_size = 0x110000

    def encode(self, text: str, *, limit: int | None = None) -> list[int]:
        if limit is not None and len(text) > limit:
            raise PromptTooLong(len(text))
        return [ord(c) for c in text]

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(chr(t) for t in token_ids)

    #: The fake's "template" renders tools, tool calls and tool results.
    template_handles_tools = True

    def tool_call_parser(self, tools: list[dict[str, Any]]) -> None:
        return None  # "auto" tool choice is tested on the real engine

    def apply_chat_template(
        self, messages: list[dict[str, Any]], *, add_generation_prompt: bool,
        limit: int | None = None, tools: list[dict[str, Any]] | None = None,
    ) -> list[int]:
        text = f"<tools>{json.dumps(tools)}\n" if tools else ""
        for m in messages:
            calls = m.get("tool_calls")
            text += f"<{m['role']}>{m['content']}{json.dumps(calls) if calls else ''}\n"
        return self.encode(text + ("<assistant>" if add_generation_prompt else ""),
                           limit=limit)


class FakeEngine:
    def __init__(self, model_name: str = "fake-base", max_model_len: int = 512) -> None:
        self._model_name = model_name
        self._max_model_len = max_model_len
        self._tokenizer = CharTokenizer()
        self.loaded: dict[int, AdapterSpec] = {}
        self.aborted: list[str] = []
        self.finished: list[str] = []
        self.healthy = True
        #: Seconds to wait between tokens (tests of disconnects use it).
        self.step_delay = 0.0

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    @property
    def max_loras(self) -> int:
        return 4

    @property
    def tokenizer(self) -> CharTokenizer:
        return self._tokenizer

    def answer(self, prompt_token_ids: list[int], adapter: AdapterSpec | None) -> str:
        who = adapter.name if adapter else self._model_name
        tail = self._tokenizer.decode(prompt_token_ids[-12:]).replace("\n", " ")
        return f"{who} answers: {tail}"

    async def generate(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        sampling: SamplingSpec,
        adapter: AdapterSpec | None = None,
    ) -> AsyncIterator[GenerationStep]:
        if adapter is not None and adapter.engine_id not in self.loaded:
            self.loaded[adapter.engine_id] = adapter  # loaded on first use, like vLLM
        base = self.answer(prompt_token_ids, adapter)
        if sampling.structured is not None:
            base = _conforming(sampling.structured)
        if sampling.ignore_eos:
            target = (base * (sampling.max_tokens // len(base) + 1))[: sampling.max_tokens]
        else:
            target = base[: sampling.max_tokens]
        done = False
        try:
            choices = list(self._choices(target, sampling))
            length = max(len(t) for t, _ in choices)
            for pos in range(length):
                if self.step_delay:
                    await asyncio.sleep(self.step_delay)
                else:
                    await asyncio.sleep(0)
                step = GenerationStep(prompt_tokens=len(prompt_token_ids))
                for index, (text, reason) in enumerate(choices):
                    if pos >= len(text):
                        continue
                    last = pos == len(text) - 1
                    step.choices.append(self._delta(index, text[pos], sampling, reason if last
                                                    else None))
                step.finished = pos == length - 1
                yield step
            done = True
            self.finished.append(request_id)
        finally:
            if not done:
                self.aborted.append(request_id)

    @staticmethod
    def _choices(target: str, sampling: SamplingSpec) -> list[tuple[str, str]]:
        out = []
        for i in range(sampling.n):
            # Sampled choices differ from each other; greedy ones are identical.
            text = target if sampling.temperature == 0 or i == 0 else target[::-1]
            reason = "length" if len(text) >= sampling.max_tokens else "stop"
            for stop in sampling.stop:
                cut = text.find(stop)
                if cut != -1:
                    text, reason = text[:cut], "stop"
            out.append((text or " ", reason))
        return out

    @staticmethod
    def _delta(index: int, char: str, sampling: SamplingSpec, finish: str | None) -> ChoiceDelta:
        logprobs = None
        if sampling.logprobs is not None:
            top = ((char, ord(char), -0.25), ("?", ord("?"), -2.0), ("!", ord("!"), -3.0))
            logprobs = [TokenLogprob(char, ord(char), -0.25, top[: sampling.logprobs + 1])]
        return ChoiceDelta(
            index=index, text=char, token_ids=[ord(char)], logprobs=logprobs,
            finish_reason=finish,  # type: ignore[arg-type]
        )

    async def add_adapter(self, adapter: AdapterSpec) -> None:
        if not (adapter.path / "adapter_config.json").is_file():
            raise AdapterLoadError(f"{adapter.path} has no adapter_config.json")
        self.loaded[adapter.engine_id] = adapter

    async def remove_adapter(self, adapter: AdapterSpec) -> None:
        self.loaded.pop(adapter.engine_id, None)

    async def adapter_residency(self) -> Mapping[int, Residency]:
        """Every adapter added (or used) and not removed is in a slot; no LRU here."""
        if not self.healthy:
            raise EngineError("fake engine marked unhealthy")
        return {engine_id: "gpu" for engine_id in self.loaded}

    async def check_health(self) -> None:
        if not self.healthy:
            raise EngineError("fake engine marked unhealthy")

    async def shutdown(self) -> None:
        return None


def _conforming(structured: StructuredOutput) -> str:
    """A text the constraint admits (the fake has no grammar engine: a fixed pick)."""
    if structured.choice:
        return structured.choice[0]
    if structured.json_schema is not None:
        return json.dumps(_instance(structured.json_schema))
    if structured.json_object:
        return "{}"
    return "x"


def _instance(schema: Mapping[str, Any]) -> Any:
    """A small instance of a JSON schema: enough for the tool-call schemas tests send."""
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        return _instance({**schema["anyOf"][0], **{k: v for k, v in schema.items()
                                                   if k not in ("anyOf",)}})
    kind = schema.get("type", "object")
    if kind == "array":
        return [_instance(schema.get("items", {}))] * max(1, schema.get("minItems", 1))
    if kind == "object":
        props = schema.get("properties", {})
        return {k: _instance(props[k]) for k in schema.get("required", props)}
    return {"string": "s", "integer": 1, "number": 1.5, "boolean": True}.get(kind)
