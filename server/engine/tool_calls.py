"""Tool calls in a model's own syntax (``tool_choice: "auto"``), read by vLLM's tool-call
parsers behind the engine boundary.

A model trained for tools writes calls its own way (Hermes' ``<tool_call>{...}
</tool_call>``, Llama 3's JSON, Mistral's ``[TOOL_CALLS]``...); ``--tool-call-parser``
names the vLLM parser for it. The protocol layer sees only ``ToolCallParser``: whole
texts (non-streaming) and deltas (streaming) in, content and calls out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.tokenizers import get_tokenizer
from vllm.tool_parsers import ToolParserManager
from vllm.tool_parsers.abstract_tool_parser import ToolParser

from .interface import ParsedToolCall, ToolCallDelta

log = logging.getLogger(__name__)


def parser_names() -> list[str]:
    """Every parser name ``--tool-call-parser`` takes."""
    return sorted({*ToolParserManager.tool_parsers, *ToolParserManager.lazy_parsers})


def parser_class(name: str) -> type[ToolParser]:
    """The parser class, or ValueError naming the valid choices (checked at start)."""
    try:
        return ToolParserManager.get_tool_parser(name)
    except KeyError:
        raise ValueError(f"--tool-call-parser {name!r} is not one of vLLM's parsers: "
                         f"{', '.join(parser_names())}") from None


def check_parser(name: str, model: str) -> None:
    """ValueError unless ``name`` is a parser and takes the model's tokenizer (several
    look for their special tokens in it when built): checked at start, so a misfit is
    a start-up error, not a 500 on every request."""
    cls = parser_class(name)
    try:
        cls(get_tokenizer(model), [])
    except Exception as exc:
        raise ValueError(f"--tool-call-parser {name} does not fit the model's tokenizer: "
                         f"{exc}") from None


class VllmToolCallParser:
    """One choice's parser (vLLM's parsers keep streaming state per choice)."""

    def __init__(self, cls: type[ToolParser], tokenizer: Any,
                 tools: list[dict[str, Any]]) -> None:
        # vLLM's parsers read the request for its tools (names, schemas): a request
        # that holds only those.
        self._request = ChatCompletionRequest.model_validate(
            {"messages": [], "model": "hotswap", "tools": tools or None,
             "tool_choice": "auto" if tools else "none"})
        self._parser = cls(tokenizer, list(self._request.tools or []))
        self._text = ""
        self._ids: list[int] = []
        #: Arguments streamed so far, per call index.
        self._streamed: dict[int, str] = {}

    @property
    def keeps_special_tokens(self) -> bool:
        # Parsers whose markers are special tokens in some models (Hermes' <tool_call>,
        # Mistral's [TOOL_CALLS]) turn skip_special_tokens off in vLLM's server.
        adjusted = self._parser.adjust_request(self._request.model_copy())
        return not adjusted.skip_special_tokens

    def parse(self, text: str) -> tuple[str | None, list[ParsedToolCall]]:
        try:
            info = self._parser.extract_tool_calls(text, self._request)
        except Exception:  # a parser bug must not fail the request: the text stands
            log.exception("tool-call parser failed; answering the text as content")
            return text, []
        if not info.tools_called:
            return info.content if info.content is not None else text, []
        return info.content, [ParsedToolCall(c.function.name, c.function.arguments)
                              for c in info.tool_calls]

    def feed(self, delta_text: str, delta_ids: Sequence[int]
             ) -> tuple[str, list[ToolCallDelta]]:
        previous_text, previous_ids = self._text, self._ids
        self._text += delta_text
        self._ids = [*previous_ids, *delta_ids]
        try:
            message = self._parser.extract_tool_calls_streaming(
                previous_text, self._text, delta_text, previous_ids, self._ids,
                list(delta_ids), self._request)
        except Exception:
            log.exception("tool-call parser failed on a delta; passing it on as content")
            return delta_text, []
        if message is None:
            return "", []
        deltas = []
        for call in message.tool_calls:
            fn = call.function
            arguments = (fn.arguments or "") if fn is not None else ""
            self._streamed[call.index] = self._streamed.get(call.index, "") + arguments
            deltas.append(ToolCallDelta(call.index, fn.name if fn is not None else None,
                                        arguments))
        return message.content or "", deltas

    def finish(self) -> list[ToolCallDelta]:
        """Arguments the streaming parser had not passed on when the text ended (parsers
        hold back the end of a call until they see it close)."""
        _, calls = self.parse(self._text)
        rest = []
        for index, call in enumerate(calls):
            sent = self._streamed.get(index)
            if sent is None:
                rest.append(ToolCallDelta(index, call.name, call.arguments))
            elif call.arguments.startswith(sent) and call.arguments != sent:
                rest.append(ToolCallDelta(index, None, call.arguments[len(sent):]))
        return rest
