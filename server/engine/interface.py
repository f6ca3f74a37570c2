"""The engine boundary: everything the HTTP layer may ask of an inference engine.

Nothing here imports vLLM. ``vllm.py`` implements this protocol on vLLM's
``AsyncLLM``; ``fake.py`` implements it deterministically for HTTP unit tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length", "abort"]

#: Where an adapter's weights are. ``gpu``: in one of the ``max_loras`` slots a batch
#: can use (device memory; host memory on the CPU build, same role); ``cpu``: in the
#: engine's host-memory cache (``max_cpu_loras``), copied into a slot when next used;
#: ``disk``: not loaded, read from its files when next used.
Residency = Literal["gpu", "cpu", "disk"]


@dataclass(frozen=True)
class StructuredOutput:
    """A constraint on what the engine may generate: exactly one field is set.
    ``json_schema``: text matching the JSON schema; ``json_object``: any JSON object;
    ``regex``: a match of the regular expression; ``choice``: one of the strings;
    ``grammar``: a sentence of the EBNF / GBNF grammar."""

    json_schema: Mapping[str, Any] | None = None
    json_object: bool = False
    regex: str | None = None
    choice: tuple[str, ...] | None = None
    grammar: str | None = None


@dataclass(frozen=True)
class SamplingSpec:
    """Engine-neutral sampling parameters (already validated by the protocol layer)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    #: Number of top alternatives to report per generated token; None = no logprobs.
    logprobs: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    ignore_eos: bool = False
    #: Sample from the k most likely tokens only; 0: no such cut.
    top_k: int = 0
    #: Drop tokens below ``min_p`` x the most likely token's probability; 0: off.
    min_p: float = 0.0
    #: Tokens to generate before end-of-sequence or a stop may end the choice.
    min_tokens: int = 0
    #: Above 1 discourages tokens already in the prompt or output (vLLM's definition).
    repetition_penalty: float = 1.0
    #: Token id -> value added to its logit before sampling (OpenAI's logit_bias).
    logit_bias: Mapping[int, float] | None = None
    #: Token ids that end a choice, beside the model's end-of-sequence.
    stop_token_ids: tuple[int, ...] = ()
    #: Leave special tokens out of the returned text.
    skip_special_tokens: bool = True
    #: Keep the stop string that ended a choice at the end of its text.
    include_stop_str_in_output: bool = False
    structured: StructuredOutput | None = None


#: How the engine applies an adapter: LoRA weights in a slot, a soft prompt in front of
#: the prompt's embeddings, or learned keys and values in front of its K/V.
AdapterKind = Literal["lora", "prompt", "prefix"]

#: The kind of each PEFT type the server knows.
KIND_OF_PEFT_TYPE: dict[str, AdapterKind] = {
    "LORA": "lora",
    "PROMPT_TUNING": "prompt",
    "P_TUNING": "prompt",
    "PREFIX_TUNING": "prefix",
}


@dataclass(frozen=True)
class AdapterSpec:
    """An adapter the engine can apply. ``engine_id`` is stable for the process lifetime."""

    name: str
    engine_id: int
    path: Path
    kind: AdapterKind = "lora"
    #: Positions the adapter puts in front of the prompt (prompt and prefix kinds).
    num_virtual_tokens: int = 0


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    token_id: int
    logprob: float
    #: Top alternatives at this position, most likely first (may include the token itself).
    top: tuple[tuple[str, int, float], ...] = ()


@dataclass
class ChoiceDelta:
    """New output of one choice since the previous step."""

    index: int
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReason | None = None
    #: The stop string or token that ended the choice, when one did.
    stop_reason: str | int | None = None


@dataclass
class GenerationStep:
    """One engine iteration's worth of output for a request (all choices)."""

    prompt_tokens: int
    choices: list[ChoiceDelta] = field(default_factory=list)
    finished: bool = False
    #: On the last step, when the engine tracks it: seconds from entering the engine's
    #: queue to first being scheduled.
    queued_s: float | None = None


class PromptTooLong(ValueError):
    """A text holds more than the tokens it may: found without tokenizing all of it."""

    def __init__(self, at_least: int) -> None:
        super().__init__(f"at least {at_least} tokens")
        #: A lower bound of the text's token count, above the limit.
        self.at_least = at_least


@dataclass(frozen=True)
class ParsedToolCall:
    """A call a tool-call parser read from the model's text."""

    name: str
    #: JSON text.
    arguments: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a call, streaming: ``name`` set on its first piece; ``arguments`` the
    JSON text added."""

    index: int
    name: str | None
    arguments: str


class ToolCallParser(Protocol):
    """Reads tool calls in the model's own syntax, for one choice."""

    @property
    def keeps_special_tokens(self) -> bool:
        """The calls' markers may be special tokens: the text must keep them."""
        ...

    def parse(self, text: str) -> tuple[str | None, list[ParsedToolCall]]:
        """A whole text: its content (None when it is all calls) and its calls."""
        ...

    def feed(self, delta_text: str, delta_ids: Sequence[int]
             ) -> tuple[str, list[ToolCallDelta]]:
        """The next piece of text: content to pass on now, and call pieces."""
        ...

    def finish(self) -> list[ToolCallDelta]:
        """What is left to send once the text has ended."""
        ...


class Tokenizer(Protocol):
    """The model's tokenizer, as the protocol layer needs it. With a ``limit``, ``encode``
    and ``apply_chat_template`` raise ``PromptTooLong`` for a text over ``limit`` tokens,
    at a cost bounded by the limit rather than by the text."""

    def encode(self, text: str, *, limit: int | None = None) -> list[int]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...

    @property
    def vocab_size(self) -> int: ...

    def apply_chat_template(
        self, messages: list[dict[str, Any]], *, add_generation_prompt: bool,
        limit: int | None = None, tools: list[dict[str, Any]] | None = None,
    ) -> list[int]:
        """``messages`` as the model's chat template renders them; ``tools`` (OpenAI
        function definitions) are handed to the template, which may show them to the
        model."""
        ...

    @property
    def template_handles_tools(self) -> bool:
        """Whether the chat template renders ``tools``, tool calls and tool results."""
        ...

    def tool_call_parser(self, tools: list[dict[str, Any]]) -> ToolCallParser | None:
        """A parser for tool calls in the model's own syntax (``--tool-call-parser``),
        for one choice; None when the server has none."""
        ...


class EngineError(RuntimeError):
    """The engine failed in a way that is not the client's fault."""


class EngineRequestError(ValueError):
    """The engine refused this request's input (the client's fault: a 400)."""


class AdapterLoadError(EngineError):
    """The engine refused an adapter (bad weights, unsupported modules...)."""


@runtime_checkable
class Engine(Protocol):
    """The only surface of the engine the rest of hotswap uses."""

    @property
    def model_name(self) -> str: ...

    @property
    def max_model_len(self) -> int: ...

    @property
    def max_loras(self) -> int:
        """LoRA adapters one batch can use (device slots)."""
        ...

    @property
    def tokenizer(self) -> Tokenizer: ...

    def generate(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        sampling: SamplingSpec,
        adapter: AdapterSpec | None = None,
    ) -> AsyncIterator[GenerationStep]:
        """Stream output steps. Closing the iterator early aborts the request."""
        ...

    async def add_adapter(self, adapter: AdapterSpec) -> None:
        """Load an adapter (idempotent). Raises AdapterLoadError if the engine refuses it."""
        ...

    async def remove_adapter(self, adapter: AdapterSpec) -> None:
        """Drop an adapter from engine memory (idempotent)."""
        ...

    async def adapter_residency(self) -> Mapping[int, Residency]:
        """``engine_id -> "gpu" | "cpu"`` for every adapter the engine holds now; an id
        absent is on ``disk``. The engine evicts by LRU on its own, so this is its word,
        not a record of add/remove calls. Raises EngineError if the engine can not tell.
        """
        ...

    async def check_health(self) -> None:
        """Raise EngineError if the engine can not serve."""
        ...

    async def shutdown(self) -> None: ...
