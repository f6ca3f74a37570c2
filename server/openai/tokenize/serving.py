"""Tokenizing and detokenizing as the inference endpoints do it, without generating.

``/tokenize`` gives the ids ``/v1/completions`` makes of a ``prompt`` and
``/v1/chat/completions`` makes of ``messages`` (the same tokenizer calls and the same
message rules), so ``count`` is the ``usage.prompt_tokens`` a completion of it reports.
One tokenizer serves every adapter of the base model; what an adapter changes is only
the virtual tokens a prompt-tuning, P-tuning or prefix-tuning adapter puts in front of
the prompt, which the answer reports apart (``num_virtual_tokens``).

Bounded as the pipeline bounds a prompt: the same ``TokenBudget`` (``--max-prompt-tokens``
and the context, an oversized text refused from a chunked count), the same message
limit, token ids checked against the vocabulary before any decoding, and the work done
in the one tokenizer thread, never on the event loop. Looking ``model`` up never pulls
from the hub (:func:`..models.serving.find`).
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio.to_thread

from ...auth import Principal
from ...deps import AppState, Serving
from ...engine.interface import EngineRequestError, PromptTooLong, Tokenizer
from ...errors import InvalidRequest, UnsupportedParameter
from ..chat.serving import template_messages
from ..models.serving import find
from ..prompts import TokenBudget, check_token_ids
from .protocol import DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse


async def tokenize(serving: Serving, state: AppState, req: TokenizeRequest,
                   principal: Principal) -> TokenizeResponse:
    param = check(req)
    manifest = await find(serving, req.model or serving.models.base_name, principal)
    engine = serving.engine
    budget = TokenBudget(state.limits.max_prompt_tokens, engine.max_model_len, param)
    ids = await anyio.to_thread.run_sync(token_ids, req, engine.tokenizer, budget,
                                         limiter=state.tokenizing)
    virtual = 0 if manifest is None else manifest.num_virtual_tokens or 0
    return TokenizeResponse(count=len(ids), max_model_len=engine.max_model_len, tokens=ids,
                            num_virtual_tokens=virtual)


async def detokenize(serving: Serving, state: AppState, req: DetokenizeRequest,
                     principal: Principal) -> DetokenizeResponse:
    await find(serving, req.model or serving.models.base_name, principal)
    engine = serving.engine
    budget = TokenBudget(state.limits.max_prompt_tokens, engine.max_model_len, "tokens")
    text = await anyio.to_thread.run_sync(text_of, req.tokens, engine.tokenizer, budget,
                                          limiter=state.tokenizing)
    return DetokenizeResponse(prompt=text)


def check(req: TokenizeRequest) -> str:
    """Refuse what the schema admits but this server can not honour (400); the field
    that holds the input (``prompt`` or ``messages``)."""
    if (req.prompt is None) == (req.messages is None):
        raise InvalidRequest("give prompt (a text) or messages (a chat): one of them",
                             param="prompt")
    if req.return_token_strs:
        # The Tokenizer protocol has no id -> token string call; decoding one id at a
        # time would give text pieces, not the tokenizer's strings vLLM returns.
        raise UnsupportedParameter("return_token_strs is not supported",
                                   param="return_token_strs")
    # Each would change what the template renders; here it is the model's own template
    # over the messages alone.
    chat_only = {"continue_final_message": req.continue_final_message,
                 "chat_template": req.chat_template is not None,
                 "chat_template_kwargs": bool(req.chat_template_kwargs),
                 "media_io_kwargs": bool(req.media_io_kwargs),
                 "mm_processor_kwargs": bool(req.mm_processor_kwargs)}
    for name, given in chat_only.items():
        if given:
            raise UnsupportedParameter(f"{name} is not supported", param=name)
    # The inference endpoints add special tokens to a prompt and none to a template's
    # output; the other choice would give ids no completion here is made of.
    served = req.messages is None
    if served and req.tools:
        raise InvalidRequest("tools are shown with messages, not with a prompt",
                             param="tools")
    if req.add_special_tokens is not None and req.add_special_tokens != served:
        raise UnsupportedParameter(
            f"add_special_tokens={str(not served).lower()} is not supported with "
            f"{'prompt' if served else 'messages'}", param="add_special_tokens")
    return "prompt" if served else "messages"


def token_ids(req: TokenizeRequest, tokenizer: Tokenizer, budget: TokenBudget
              ) -> list[int]:
    """The ids of the prompt or the templated messages (in the tokenizer thread)."""
    try:
        if req.messages is not None:
            # Chat completions' own message rules (roles, text parts, tool messages the
            # template can express), so the ids are the ones a completion is made of.
            handles = tokenizer.template_handles_tools
            messages = template_messages(req.messages, handles_tools=handles)
            tools = ([t.model_dump(exclude_none=True) for t in req.tools]
                     if req.tools and handles else None)
            ids = tokenizer.apply_chat_template(
                messages, add_generation_prompt=req.add_generation_prompt,
                limit=budget.limit(0), tools=tools)
        else:
            ids = tokenizer.encode(req.prompt or "", limit=budget.limit(0))
        # The chunked count refuses only long texts; a short one may still be over.
        if len(ids) > budget.limit(0):
            raise PromptTooLong(len(ids))
    except PromptTooLong as exc:
        raise budget.refusal(exc, used=0) from None
    except EngineRequestError as exc:  # the template refused the messages
        raise InvalidRequest(str(exc), param="messages") from None
    return ids


def text_of(tokens: Sequence[int], tokenizer: Tokenizer, budget: TokenBudget) -> str:
    """The text of ``tokens``, which must fit the budget and the vocabulary before any
    decoding (in the tokenizer thread)."""
    if not tokens:
        return ""
    budget.check_ids([tokens])
    check_token_ids(tokens, tokenizer.vocab_size, "tokens")
    return tokenizer.decode(tokens)

