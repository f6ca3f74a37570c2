"""Wire schema of ``/tokenize`` and ``/detokenize``: vLLM's (``vllm/entrypoints/serve/
tokenize/protocol.py``), so tools written for vLLM's server work here.

vLLM takes two tokenize bodies, one with ``prompt`` and one with ``messages``; here they
are one model holding both, and exactly one of the two must be given (a union of two
models would name its member in every validation error's ``param``). Every field vLLM
accepts is a field here, so those this server can not honour are refused by name
(400 ``unsupported_parameter``), never silently ignored. Booleans and token ids are
strict: ``"true"`` or ``1.0`` is a 400, as the schema says, not a guess.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt
from pydantic_core import PydanticCustomError

from ...limits import MAX_MESSAGES, MAX_TOOLS
from ..chat.protocol import ChatMessage, ToolDefinition


def _few_enough(value: Any) -> Any:
    # Counted before the messages are validated one by one, as chat completions do.
    if isinstance(value, list) and len(value) > MAX_MESSAGES:
        raise PydanticCustomError("too_long", "at most {n} messages in one request",
                                  {"n": MAX_MESSAGES})
    return value


Messages = Annotated[list[ChatMessage], BeforeValidator(_few_enough),
                     Field(min_length=1, max_length=MAX_MESSAGES)]


class TokenizeRequest(BaseModel):
    """vLLM's ``TokenizeCompletionRequest`` (``prompt``) and ``TokenizeChatRequest``
    (``messages``) in one."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(
        default=None, description="Base model name, or an adapter name; none: the base "
        "model. The tokenizer is the base model's for every adapter.")
    prompt: str | None = Field(default=None, description="A text, tokenized as "
                               "/v1/completions tokenizes its prompt.")
    messages: Messages | None = Field(
        default=None, description="A chat, through the model's chat template as "
        "/v1/chat/completions sends it.")
    add_special_tokens: StrictBool | None = Field(
        default=None, description="Whether the tokenizer adds its special tokens (BOS...). "
        "Default, and the only value served: true for a prompt (as completions tokenize), "
        "false for messages (the template holds its own).")
    add_generation_prompt: StrictBool = Field(
        default=True, description="Messages: end with the template's assistant turn "
        "opening (as chat completions do).")
    return_token_strs: StrictBool | None = Field(
        default=False, description="Not served: the tokenizer's own token strings.")
    # vLLM's chat-only fields, each refused when set (tokenize/serving.py).
    continue_final_message: StrictBool = False
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    media_io_kwargs: dict[str, Any] | None = None
    mm_processor_kwargs: dict[str, Any] | None = None
    #: Messages: the tools the template shows the model (as chat completions pass them).
    tools: Annotated[list[ToolDefinition], Field(max_length=MAX_TOOLS)] | None = None


class TokenizeResponse(BaseModel):
    #: Tokens of the text or chat: what ``usage.prompt_tokens`` counts for it.
    count: int
    max_model_len: int
    tokens: list[int]
    #: hotswap extension: positions a prompt-tuning, P-tuning or prefix-tuning adapter
    #: puts in front of these tokens (0 for the base model and LoRA). They are not
    #: tokens of the vocabulary, so not in ``tokens`` or ``count``, but they take room
    #: in ``max_model_len``.
    num_virtual_tokens: int = 0


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(
        default=None, description="Base model name, or an adapter name; none: the base "
        "model.")
    tokens: list[Annotated[StrictInt, Field(ge=0)]]


class DetokenizeResponse(BaseModel):
    #: The text of the tokens, special tokens left out (as completions' ``echo`` shows a
    #: prompt; vLLM's own /detokenize keeps them).
    prompt: str
