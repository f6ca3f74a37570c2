"""Sampling parameters from a request's fields, within the model's context length."""

from __future__ import annotations

from ..engine.interface import SamplingSpec
from ..errors import ContextLengthExceeded
from .protocol import SamplingFields


def sampling_spec(req: SamplingFields, *, max_tokens: int | None, logprobs: int | None,
                  prompt_len: int, max_model_len: int,
                  default_max_tokens: int | None = None,
                  virtual_tokens: int = 0) -> SamplingSpec:
    """``max_tokens`` and ``logprobs`` as the endpoint reads them from its own fields;
    without ``max_tokens``, ``default_max_tokens`` (--default-max-tokens) or, when that is
    None too, the rest of the context. ``virtual_tokens``: what a prompt or prefix
    adapter puts in front of the prompt (they take context too)."""
    room = max_model_len - prompt_len - virtual_tokens
    if room < 1 or (max_tokens is not None and max_tokens > room):
        asked = prompt_len + virtual_tokens + (max_tokens or 1)
        adapter = (f"{virtual_tokens} virtual tokens of the adapter, " if virtual_tokens
                   else "")
        raise ContextLengthExceeded(
            f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested {asked} tokens ({prompt_len} in the messages, {adapter}"
            f"{max_tokens or 1} in the completion). Please reduce the length of the messages "
            "or completion.",
            param="max_tokens",
        )
    return SamplingSpec(
        max_tokens=max_tokens or min(room, default_max_tokens or room),
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
