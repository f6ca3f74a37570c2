"""Sampling parameters from a request's fields, within the model's context length."""

from __future__ import annotations

from ..engine.interface import SamplingSpec, StructuredOutput
from ..errors import ContextLengthExceeded, InvalidRequest
from .protocol import SamplingFields


def sampling_spec(req: SamplingFields, *, max_tokens: int | None, logprobs: int | None,
                  prompt_len: int, max_model_len: int, vocab_size: int,
                  default_max_tokens: int | None = None,
                  virtual_tokens: int = 0,
                  structured: StructuredOutput | None = None) -> SamplingSpec:
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
    max_tokens = max_tokens or min(room, default_max_tokens or room)
    if req.min_tokens > max_tokens:
        raise InvalidRequest(f"min_tokens ({req.min_tokens}) is above max_tokens "
                             f"({max_tokens})", param="min_tokens")
    return SamplingSpec(
        max_tokens=max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        n=req.n,
        seed=req.seed,
        stop=req.stop_list(),
        logprobs=logprobs,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        ignore_eos=req.ignore_eos,
        top_k=req.top_k or 0,
        min_p=req.min_p or 0.0,
        min_tokens=req.min_tokens,
        repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
        logit_bias=_logit_bias(req, vocab_size),
        stop_token_ids=_in_vocab(tuple(req.stop_token_ids or ()), vocab_size,
                                 "stop_token_ids"),
        skip_special_tokens=req.skip_special_tokens,
        include_stop_str_in_output=req.include_stop_str_in_output,
        structured=structured,
    )


def _logit_bias(req: SamplingFields, vocab_size: int) -> dict[int, float] | None:
    if not req.logit_bias:
        return None
    bias = {int(k): v for k, v in req.logit_bias.items()}
    _in_vocab(tuple(bias), vocab_size, "logit_bias")
    return bias


def _in_vocab(ids: tuple[int, ...], vocab_size: int, param: str) -> tuple[int, ...]:
    bad = next((t for t in ids if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise InvalidRequest(f"{param}: token id {bad} is outside the vocabulary "
                             f"(0..{vocab_size - 1})", param=param)
    return ids
