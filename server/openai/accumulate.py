"""Collect engine deltas per choice: the text, token ids and logprobs so far, and usage."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.interface import ChoiceDelta, TokenLogprob
from .protocol import Usage


@dataclass
class ChoiceState:
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)


class Accumulator:
    """Every choice's state; usage over all of them."""

    def __init__(self, num_choices: int) -> None:
        self.choices = [ChoiceState() for _ in range(num_choices)]
        self.prompt_tokens = 0

    def add_prompt(self, tokens: int) -> None:
        self.prompt_tokens += tokens

    def add(self, index: int, delta: ChoiceDelta) -> None:
        state = self.choices[index]
        state.text += delta.text
        state.token_ids.extend(delta.token_ids)
        if delta.logprobs:
            state.logprobs.extend(delta.logprobs)
        if delta.finish_reason is not None:
            state.finish_reason = finish_reason(delta)

    def usage(self) -> Usage:
        completion = sum(len(c.token_ids) for c in self.choices)
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=completion,
            total_tokens=self.prompt_tokens + completion,
        )


def finish_reason(delta: ChoiceDelta) -> str | None:
    # An engine-side abort only happens when the client went away; report "stop"
    # rather than a value OpenAI clients do not know.
    return None if delta.finish_reason is None else (
        "stop" if delta.finish_reason == "abort" else delta.finish_reason
    )
