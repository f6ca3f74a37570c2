"""The model's Hugging Face tokenizer as the protocol layer needs it (``Tokenizer``):
bounded counting of long texts, the chat template (the model's or --chat-template, with
tools), and a tool-call parser per choice (--tool-call-parser)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jinja2
from vllm.tool_parsers.abstract_tool_parser import ToolParser

from .interface import EngineRequestError, PromptTooLong
from .tool_calls import VllmToolCallParser

#: Characters counted at a time when a long text may be over its token limit.
COUNT_CHUNK_CHARS = 32_768
#: Tokens a cut between two chunks may add to the count: a word, or a special token
#: written out (``<|im_start|>``), cut in two tokenizes as more pieces.
CUT_SLACK_TOKENS = 16


class HfTokenizer:
    """Adapts the engine's Hugging Face tokenizer to the ``Tokenizer`` protocol.
    ``chat_template``: a template used instead of the model's (--chat-template);
    ``tool_parser``: vLLM's parser for the model's tool-call syntax (--tool-call-parser).
    """

    def __init__(self, tokenizer: Any, *, chat_template: str | None = None,
                 tool_parser: type[ToolParser] | None = None) -> None:
        self._tok = tokenizer
        self._template = chat_template
        self._tool_parser = tool_parser

    def encode(self, text: str, *, limit: int | None = None) -> list[int]:
        return self._encode(text, special=True, limit=limit)

    def _encode(self, text: str, *, special: bool, limit: int | None) -> list[int]:
        if limit is not None and len(text) > COUNT_CHUNK_CHARS:
            self._refuse_if_over(text, limit)
        return list(self._tok.encode(text, add_special_tokens=special))

    def _refuse_if_over(self, text: str, limit: int) -> None:
        """Raise ``PromptTooLong`` if ``text`` holds over ``limit`` tokens, counted chunk
        by chunk and stopping once over. Why not tokenize it whole: the tokenizer's
        result for a text of 350,000 tokens takes 40-80 ms to free, with the GIL held,
        so the event loop stalls that long (measured; the tokenizing itself lets the
        GIL go). Chunks keep each result small, and a text far over the limit is refused
        after its first few chunks."""
        counted = 0
        for start in range(0, len(text), COUNT_CHUNK_CHARS):
            end = start + COUNT_CHUNK_CHARS
            counted += len(self._tok.encode(text[start:end], add_special_tokens=False))
            # Every cut so far may have added tokens, this chunk's own end included
            # (unless it is the text's end).
            cuts = start // COUNT_CHUNK_CHARS + (1 if end < len(text) else 0)
            at_least = counted - cuts * CUT_SLACK_TOKENS
            if at_least > limit:
                raise PromptTooLong(at_least)

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(token_ids), skip_special_tokens=True))

    @property
    def vocab_size(self) -> int:
        return len(self._tok)

    @property
    def template_handles_tools(self) -> bool:
        # Templates that take tools read the ``tools`` variable (and render
        # ``tool_calls`` and tool results beside it); the rest drop them silently.
        template = self._template or getattr(self._tok, "chat_template", None)
        sources = template.values() if isinstance(template, dict) else [template or ""]
        return any("tools" in source for source in sources)

    def tool_call_parser(self, tools: list[dict[str, Any]]) -> VllmToolCallParser | None:
        if self._tool_parser is None:
            return None
        try:
            return VllmToolCallParser(self._tool_parser, self._tok, tools)
        except ValueError as exc:  # pydantic's and vLLM's validation errors
            raise EngineRequestError(f"tools: {exc}") from None

    def apply_chat_template(
        self, messages: list[dict[str, Any]], *, add_generation_prompt: bool,
        limit: int | None = None, tools: list[dict[str, Any]] | None = None,
    ) -> list[int]:
        try:
            text = self._tok.apply_chat_template(
                messages, add_generation_prompt=add_generation_prompt, tokenize=False,
                tools=tools or None, chat_template=self._template,
            )
        except (jinja2.TemplateError, TypeError, ValueError, KeyError) as exc:
            # A template that raises on input it does not take (raise_exception() in
            # many templates: roles out of order, a system message it refuses), or
            # trips over a value of a type it did not expect (a filter on a list).
            raise EngineRequestError(f"the model's chat template refused the messages: "
                                     f"{exc}") from None
        # The template already holds any BOS it wants; adding special tokens
        # again would double it.
        return self._encode(text, special=False, limit=limit)
