"""Bounds on the work one request, one key and the whole server may take on.

``LimitSettings`` holds them as settings (so each is a ``hotswap serve`` flag and a
``HOTSWAP_*`` variable, listed in ``--help`` and the README); ``RequestLimits`` is the
validated, plain form the app runs with. Defaults suit the CPU box this runs on in CI
and a single GPU alike: they bound an abusive request long before it could hold the
engine for minutes, and no ordinary request comes near them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ByteSize, Field, model_validator
from pydantic_settings import BaseSettings

#: Protocol bounds (not flags: the OpenAI API fixes them or they are far past any use).
MAX_STOP_SEQUENCES = 16
MAX_STOP_CHARS = 256
#: vLLM's default ``max_logprobs``; OpenAI's chat API allows 20 too.
MAX_LOGPROBS = 20
#: Entries of logit_bias: OpenAI's own bound.
MAX_LOGIT_BIAS = 300
#: Tools in one chat request, and calls in one message: OpenAI's bound on tools.
MAX_TOOLS = 128
#: Messages in one chat request: OpenAI's own bound.
MAX_MESSAGES = 2048
#: Prompts in one completions request, whatever --max-prompts says (its highest value).
MAX_PROMPTS = 4096


@dataclass(frozen=True)
class RequestLimits:
    #: Bytes of a request body on every route but the adapter upload (which is capped by
    #: the adapter size limit as it arrives).
    max_body_bytes: int = 1 << 20
    #: Seconds a request body may send nothing (slow-loris bodies).
    body_idle_timeout_s: float = 30.0
    #: Prompts in one completions request (each becomes an engine request).
    max_prompts: int = 64
    #: Prompt tokens of one request, all prompts together.
    max_prompt_tokens: int = 32768
    #: Sequences one request may ask for: prompts x ``n``.
    max_choices: int = 64
    #: ``max_tokens`` when the request gives none (None: the rest of the context).
    default_max_tokens: int | None = 1024
    #: Sequences (prompts x n) generating at once, server-wide; past it 429.
    max_in_flight: int = 128
    #: Sequences one API key may hold at once; None: no share of its own.
    max_in_flight_per_key: int | None = None
    #: Seconds SIGTERM waits for in-flight requests before the process exits.
    drain_timeout_s: float = 25.0


class LimitSettings(BaseSettings):
    """The settings behind ``RequestLimits`` (mixed into ``Settings``)."""

    max_body_bytes: ByteSize = Field(
        default=ByteSize(1 << 20), ge=1024,
        description="Largest request body (e.g. 2MiB) on every route but the adapter upload "
        "(capped by the adapter size limit as it arrives); larger gets 413. JSON is parsed "
        "on the event loop, ~0.1 s per MiB at worst, so this also bounds that stall; 1 MiB "
        "holds ~250k tokens of chat text or ~150k token ids.",
        json_schema_extra={"metavar": "BYTES"},
    )
    body_idle_timeout: float = Field(
        default=30.0, gt=0,
        description="Seconds a request body may send no byte before it is refused (408).",
        json_schema_extra={"metavar": "SECONDS"},
    )
    max_prompts: int = Field(
        default=64, ge=1, le=MAX_PROMPTS,
        description="Prompts in one completions request (a batch); more get 400.",
    )
    max_prompt_tokens: int = Field(
        default=32768, ge=16,
        description="Prompt tokens of one request, all its prompts together; more get 400.",
    )
    max_choices: int = Field(
        default=64, ge=1,
        description="Sequences one request may ask for (prompts x n); more get 400.",
    )
    default_max_tokens: int = Field(
        default=1024, ge=0,
        description="max_tokens of a request that sets none (capped by the room left in "
        "the context); 0: such requests may fill the context.",
    )
    max_in_flight: int = Field(
        default=128, ge=1,
        description="Sequences (prompts x n) generating at once on this server; a request "
        "past it gets 429 with Retry-After at once, never an unbounded queue (a client "
        "or load balancer retrying elsewhere does better than a wait in line).",
    )
    max_in_flight_per_key: int | None = Field(
        default=None, ge=1,
        description="Sequences one API key may hold at once (429 past it), so one key can "
        "not take every slot. Default: half of --max-in-flight when more than one key is "
        "configured, else no share of its own.",
    )
    drain_timeout: float = Field(
        default=25.0, ge=0,
        description="On SIGTERM: seconds in-flight requests get to finish (readiness turns "
        "503 at once, new requests get 503) before the process exits. Keep it below the "
        "orchestrator's grace period (Kubernetes: 30 s by default).",
        json_schema_extra={"metavar": "SECONDS"},
    )

    @model_validator(mode="after")
    def _check_limits(self) -> LimitSettings:
        # A request the bounds let through must be able to get its slots some day.
        if self.max_choices > self.max_in_flight:
            raise ValueError("max_choices must be <= max_in_flight")
        if self.max_in_flight_per_key is not None and (
                not self.max_choices <= self.max_in_flight_per_key <= self.max_in_flight):
            raise ValueError("max_in_flight_per_key must be between max_choices and "
                             "max_in_flight")
        return self

    def request_limits(self, *, keys: int) -> RequestLimits:
        """``keys``: how many API keys are configured (for the per-key default)."""
        per_key = self.max_in_flight_per_key
        if per_key is None and keys > 1:
            per_key = max(self.max_choices, self.max_in_flight // 2)
        return RequestLimits(
            max_body_bytes=int(self.max_body_bytes),
            body_idle_timeout_s=self.body_idle_timeout,
            max_prompts=self.max_prompts,
            max_prompt_tokens=self.max_prompt_tokens,
            max_choices=self.max_choices,
            default_max_tokens=self.default_max_tokens or None,
            max_in_flight=self.max_in_flight,
            max_in_flight_per_key=per_key,
            drain_timeout_s=self.drain_timeout,
        )
