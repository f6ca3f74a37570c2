"""What text completions add to the shared pipeline: prompts as text, token ids or
batches of either; ``echo``; completion-shaped logprobs with text offsets."""

from __future__ import annotations

from collections.abc import Sequence

from ...engine.interface import PromptTooLong, Tokenizer, TokenLogprob
from ...errors import InvalidRequest, UnsupportedParameter
from ..accumulate import Accumulator, ChoiceState, finish_reason
from ..generate import Output
from ..pipeline import Call, Endpoint
from ..prompts import Prompt, TokenBudget, check_token_ids
from ..protocol import Usage
from .protocol import (
    CompletionChoice,
    CompletionChunk,
    CompletionChunkChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
)

CompletionCall = Call[CompletionRequest]


class CompletionsEndpoint(Endpoint[CompletionRequest]):
    id_prefix = "cmpl"
    prompt_param = "prompt"
    metric_name = "completions"

    def check(self, req: CompletionRequest) -> None:
        if req.suffix:
            raise UnsupportedParameter("suffix is not supported", param="suffix")
        if req.best_of is not None and req.best_of != req.n:
            raise UnsupportedParameter("best_of other than n is not supported", param="best_of")
        if req.echo and req.logprobs is not None:
            raise UnsupportedParameter("echo together with logprobs is not supported",
                                       param="echo")

    def count_prompts(self, req: CompletionRequest) -> int:
        raw = req.prompt
        # A string, or one prompt of token ids, is one prompt; a list of either is a batch.
        if isinstance(raw, str) or (raw and all(isinstance(p, int) for p in raw)):
            return 1
        return max(1, len(raw))

    def prompts(self, req: CompletionRequest, tokenizer: Tokenizer, budget: TokenBudget
                ) -> list[Prompt]:
        raw = req.prompt
        if isinstance(raw, str):
            texts: list[str] | None = [raw]
        elif raw and all(isinstance(p, str) for p in raw):
            texts = [str(p) for p in raw]
        else:
            texts = None
        if texts is not None:
            prompts: list[Prompt] = []
            used = 0
            for text in texts:
                try:
                    ids = tokenizer.encode(text, limit=budget.limit(used))
                except PromptTooLong as exc:
                    raise budget.refusal(exc, used=used) from None
                check_token_ids(ids, tokenizer.vocab_size, "prompt")
                prompts.append(Prompt(ids, text))
                used += len(ids)
            return prompts
        if raw and all(isinstance(p, int) for p in raw):
            id_lists = [[int(t) for t in raw]]  # type: ignore[arg-type]
        elif raw and all(isinstance(p, list) for p in raw):
            id_lists = [[int(t) for t in p] for p in raw]  # type: ignore[union-attr]
        else:
            raise InvalidRequest("prompt must be a string, a list of strings, or token ids",
                                 param="prompt")
        for ids in id_lists:
            check_token_ids(ids, tokenizer.vocab_size, "prompt")
        budget.check_ids(id_lists)  # before decoding them: that is the costly part
        return [Prompt(ids, tokenizer.decode(ids)) for ids in id_lists]

    def max_tokens(self, req: CompletionRequest) -> int | None:
        return req.max_tokens

    def logprobs(self, req: CompletionRequest) -> int | None:
        return req.logprobs

    def response(self, call: CompletionCall, acc: Accumulator) -> CompletionResponse:
        prefixes, top_k = _prefixes(call), call.req.logprobs
        choices = []
        for i, state in enumerate(acc.choices):
            lp = None
            if top_k is not None:
                lp = completion_logprobs(state.logprobs, len(prefixes[i]), top_k)
            choices.append(CompletionChoice(
                index=i, text=prefixes[i] + state.text, logprobs=lp,
                finish_reason=state.finish_reason,
                token_ids=state.token_ids if call.req.return_token_ids else None,
            ))
        return CompletionResponse(id=call.request_id, created=call.created,
                                  model=call.req.model, choices=choices, usage=acc.usage())

    def stream_start(self, call: CompletionCall) -> Sequence[CompletionChunk]:
        return [_chunk(call, [CompletionChunkChoice(index=i, text=prefix)])
                for i, prefix in enumerate(_prefixes(call)) if prefix]

    def stream_delta(self, call: CompletionCall, out: Output, before: ChoiceState
                     ) -> Sequence[CompletionChunk]:
        d, top_k = out.delta, call.req.logprobs
        lp = None
        if top_k is not None and d.logprobs:
            start = len(_prefixes(call)[out.index]) + len(before.text)
            lp = completion_logprobs(d.logprobs, start, top_k)
        if not (d.text or d.finish_reason or lp):
            return ()
        return [_chunk(call, [CompletionChunkChoice(
            index=out.index, text=d.text, logprobs=lp, finish_reason=finish_reason(d))])]

    def usage_chunk(self, call: CompletionCall, usage: Usage) -> CompletionChunk:
        return _chunk(call, [], usage)


def _prefixes(call: CompletionCall) -> list[str]:
    """Per choice, the text ``echo`` puts before the completion."""
    return [p.text if call.req.echo else "" for p in call.prompts for _ in range(call.req.n)]


def _chunk(call: CompletionCall, choices: list[CompletionChunkChoice],
           usage: Usage | None = None) -> CompletionChunk:
    return CompletionChunk(id=call.request_id, created=call.created, model=call.req.model,
                           choices=choices, usage=usage)


def completion_logprobs(logprobs: list[TokenLogprob], start_offset: int, top_k: int
                        ) -> CompletionLogprobs:
    out = CompletionLogprobs()
    offset = start_offset
    for lp in logprobs:
        out.tokens.append(lp.token)
        out.token_logprobs.append(lp.logprob)
        out.top_logprobs.append({tok: val for tok, _, val in lp.top[:top_k]} if top_k else None)
        out.text_offset.append(offset)
        offset += len(lp.token)
    return out


COMPLETIONS = CompletionsEndpoint()
