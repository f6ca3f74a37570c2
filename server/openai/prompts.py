"""Prompts as the engine takes them (token ids), and the checks every prompt passes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..engine.interface import PromptTooLong
from ..errors import ContextLengthExceeded, HotswapError, InvalidRequest


@dataclass(frozen=True)
class Prompt:
    token_ids: list[int]
    #: Text form, for ``echo``.
    text: str


@dataclass(frozen=True)
class TokenBudget:
    """How many tokens a request's prompts may hold: ``total`` over all of them
    (--max-prompt-tokens) and ``context`` for one (the model's context length; a prompt
    needs room for one generated token). Tokenizers are handed ``limit(used)`` so an
    oversized text is refused without tokenizing all of it."""

    total: int
    context: int
    param: str

    def limit(self, used: int) -> int:
        return min(self.total - used, self.context - 1)

    def check_ids(self, id_lists: Sequence[Sequence[int]]) -> None:
        """Refuse token-id prompts over the budget before decoding them."""
        longest = max((len(ids) for ids in id_lists), default=0)
        total = sum(len(ids) for ids in id_lists)
        if longest > self.context - 1:
            raise self.refusal(PromptTooLong(longest), used=0)
        if total > self.total:
            raise InvalidRequest(
                f"the prompts hold {total} tokens; at most {self.total} per request "
                "(--max-prompt-tokens)", param=self.param)

    def refusal(self, exc: PromptTooLong, *, used: int) -> HotswapError:
        """The 400 for a prompt found over ``limit(used)``: the context's if that is what
        it passed, else --max-prompt-tokens'."""
        if exc.at_least > self.context - 1:
            return ContextLengthExceeded(
                f"This model's maximum context length is {self.context} tokens. However, "
                f"a prompt holds at least {exc.at_least} tokens. Please reduce the length "
                "of the prompt.", param=self.param)
        return InvalidRequest(
            f"the prompts hold at least {used + exc.at_least} tokens; at most "
            f"{self.total} per request (--max-prompt-tokens)", param=self.param)


def check_token_ids(ids: Sequence[int], vocab_size: int, param: str) -> None:
    """400 for an empty prompt or an id outside the vocabulary (before any decoding:
    out-of-range ids must be a 400, not a decoder crash)."""
    if not ids:
        raise InvalidRequest("prompt is empty", param=param)
    bad = next((t for t in ids if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise InvalidRequest(f"token id {bad} is outside the vocabulary (0..{vocab_size - 1})",
                             param=param)
