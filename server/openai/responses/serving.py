"""What the Responses API adds to the shared pipeline: input items and ``instructions``
through the model's chat template (as chat completions do), ``text.format`` as the
output's constraint, the Response object, and its typed stream events.

Nothing is kept: ``store`` is false and ``previous_response_id`` is refused, so a
conversation is sent whole each time, as with chat completions.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Literal

from pydantic import BaseModel

from ...engine.interface import (
    EngineRequestError,
    PromptTooLong,
    StructuredOutput,
    Tokenizer,
)
from ...errors import InvalidRequest, UnsupportedParameter, from_exception
from ..accumulate import Accumulator, ChoiceState, finish_reason
from ..chat.protocol import ChatMessage
from ..chat.serving import template_messages
from ..generate import Output
from ..pipeline import Call, Endpoint
from ..prompts import Prompt, TokenBudget, check_token_ids
from ..protocol import Usage
from ..structured import checked_schema
from .protocol import (
    ContentPartEvent,
    ErrorEvent,
    IncompleteDetails,
    OutputItemEvent,
    OutputMessage,
    OutputText,
    PipelineRequest,
    ResponseError,
    ResponseEvent,
    ResponseObject,
    ResponseUsage,
    Status,
    TextConfig,
    TextDeltaEvent,
    TextDoneEvent,
)

ResponsesCall = Call[PipelineRequest]


class ResponsesEndpoint(Endpoint[PipelineRequest]):
    id_prefix = "resp"
    prompt_param = "input"
    metric_name = "responses"

    def check(self, req: PipelineRequest) -> None:
        body = req.body
        if body.store:
            raise UnsupportedParameter("store: true is not supported: this server keeps no "
                                       "responses", param="store")
        if body.previous_response_id is not None:
            raise UnsupportedParameter(
                "previous_response_id is not supported: this server keeps no responses; "
                "send the whole conversation as input", param="previous_response_id")
        if body.tools:
            raise UnsupportedParameter("tools are not supported on /v1/responses",
                                       param="tools")
        fmt = (body.text or TextConfig()).format
        if fmt.type != "json_schema" and (fmt.json_schema is not None or fmt.name):
            raise InvalidRequest("text.format.name and .schema are only read with type "
                                 "'json_schema'", param="text.format.type")
        if fmt.type == "json_schema" and fmt.json_schema is None:
            raise InvalidRequest("text.format of type 'json_schema' needs a schema",
                                 param="text.format.schema")
        if not body.input and body.instructions is None:
            raise InvalidRequest("input holds no message", param="input")

    def count_prompts(self, req: PipelineRequest) -> int:
        return 1

    def prompts(self, req: PipelineRequest, tokenizer: Tokenizer, budget: TokenBudget
                ) -> list[Prompt]:
        messages = template_messages(_chat_messages(req),
                                     handles_tools=tokenizer.template_handles_tools)
        try:
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                limit=budget.limit(0))
        except PromptTooLong as exc:
            raise budget.refusal(exc, used=0) from None
        except EngineRequestError as exc:
            raise InvalidRequest(str(exc), param="input") from None
        check_token_ids(ids, tokenizer.vocab_size, "input")
        return [Prompt(ids, "")]

    def structured(self, req: PipelineRequest) -> StructuredOutput | None:
        fmt = (req.body.text or TextConfig()).format
        if fmt.type == "json_object":
            return StructuredOutput(json_object=True)
        if fmt.type == "json_schema" and fmt.json_schema is not None:
            return StructuredOutput(json_schema=checked_schema(fmt.json_schema,
                                                               "text.format.schema"))
        return None

    def max_tokens(self, req: PipelineRequest) -> int | None:
        return req.max_tokens  # max_output_tokens, by PipelineRequest.of

    def logprobs(self, req: PipelineRequest) -> int | None:
        return None

    def response(self, call: ResponsesCall, acc: Accumulator) -> ResponseObject:
        state = acc.choices[0]
        return _response(call, _status(state.finish_reason),
                         _message(call, state.text, state.finish_reason), acc.usage())

    def stream_start(self, call: ResponsesCall) -> Sequence[BaseModel]:
        head = _response(call, "in_progress")
        empty = _message(call, None, None)
        return [
            ResponseEvent(type="response.created", response=head),
            ResponseEvent(type="response.in_progress", response=head),
            OutputItemEvent(type="response.output_item.added", output_index=0, item=empty),
            ContentPartEvent(type="response.content_part.added", item_id=empty.id,
                             output_index=0, content_index=0, part=OutputText(text="")),
        ]

    def stream_delta(self, call: ResponsesCall, out: Output, before: ChoiceState
                     ) -> Sequence[BaseModel]:
        d, item_id = out.delta, _message_id(call)
        # A delta without text (a special token left out, the end) has nothing to show.
        events: list[BaseModel] = [TextDeltaEvent(
            item_id=item_id, output_index=0, content_index=0, delta=d.text)] if d.text else []
        if d.finish_reason is None:
            return events
        # The choice ends: its text, item and the whole response, as OpenAI closes them.
        text, finish = before.text + d.text, finish_reason(d)
        message = _message(call, text, finish)
        # Usage as the accumulator counts it: the prompt's ids (no adapter's virtual
        # tokens: they are not the client's), one per generated token.
        prompt_tokens = len(call.prompts[0].token_ids)
        generated = len(before.token_ids) + len(d.token_ids)
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=generated,
                      total_tokens=prompt_tokens + generated)
        final = _response(call, _status(finish), message, usage)
        return [
            *events,
            TextDoneEvent(item_id=item_id, output_index=0, content_index=0, text=text),
            ContentPartEvent(type="response.content_part.done", item_id=item_id,
                             output_index=0, content_index=0, part=message.content[0]),
            OutputItemEvent(type="response.output_item.done", output_index=0, item=message),
            ResponseEvent(type="response.incomplete" if final.status == "incomplete"
                          else "response.completed", response=final),
        ]

    def usage_chunk(self, call: ResponsesCall, usage: Usage) -> BaseModel:
        # Never asked for (PipelineRequest has no stream_options): the final
        # response.completed event carries the usage.
        raise NotImplementedError("the Responses API has no usage chunk")

    def frame(self, call: ResponsesCall, events: AsyncIterator[BaseModel]
              ) -> AsyncGenerator[str, None]:
        return _framed(call, events)


async def _framed(call: ResponsesCall, events: AsyncIterator[BaseModel]
                  ) -> AsyncGenerator[str, None]:
    """Typed SSE (``event: <type>``, no ``data: [DONE]``), numbered from 0 in the order
    they go out. An error after the 200 is an ``error`` event, then ``response.failed``
    ends the response (the SDK yields both as typed events)."""
    seq = 0
    try:
        async for event in events:
            yield _sse(event, seq)
            seq += 1
    except Exception as exc:  # the status line is sent; this is the only way to tell
        err = from_exception(exc)
        code = err.code or err.type
        yield _sse(ErrorEvent(code=code, message=err.message, param=err.param), seq)
        failed = _response(call, "failed", error=ResponseError(code=code,
                                                               message=err.message))
        yield _sse(ResponseEvent(type="response.failed", response=failed), seq + 1)


def _sse(event: BaseModel, seq: int) -> str:
    data = event.model_dump(mode="json", by_alias=True, exclude={"sequence_number"})
    data["sequence_number"] = seq
    return f"event: {data['type']}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _chat_messages(req: PipelineRequest) -> list[ChatMessage]:
    """``instructions`` as a system message in front, then the input items, each with
    its text parts joined (as chat joins a message's text parts)."""
    body = req.body
    messages = [] if body.instructions is None else [
        ChatMessage(role="system", content=body.instructions)]
    messages += [ChatMessage(role=item.role, content="".join(p.text for p in item.content))
                 for item in body.input]
    return messages


def _hex(call: ResponsesCall) -> str:
    # The engine request id is "resp-<hex>"; OpenAI's ids are "resp_..." and "msg_...":
    # the same hex in both, so a response, its message and the logs line up.
    return call.request_id.split("-", 1)[1]


def _message_id(call: ResponsesCall) -> str:
    return f"msg_{_hex(call)}"


def _status(finish: str | None) -> Literal["completed", "incomplete"]:
    return "incomplete" if finish == "length" else "completed"


def _message(call: ResponsesCall, text: str | None, finish: str | None) -> OutputMessage:
    """The output message; ``text`` None: just added, nothing in it yet."""
    if text is None:
        return OutputMessage(id=_message_id(call), status="in_progress", content=[])
    return OutputMessage(id=_message_id(call), status=_status(finish),
                         content=[OutputText(text=text)])


def _response(call: ResponsesCall, status: Status, message: OutputMessage | None = None,
              usage: Usage | None = None, error: ResponseError | None = None
              ) -> ResponseObject:
    """The Response, with the settings it was made with echoed as OpenAI echoes them."""
    req, body = call.req, call.req.body
    return ResponseObject(
        id=f"resp_{_hex(call)}", created_at=call.created, status=status,
        completed_at=int(time.time()) if status == "completed" else None, error=error,
        incomplete_details=(IncompleteDetails(reason="max_output_tokens")
                            if status == "incomplete" else None),
        model=req.model, output=[] if message is None else [message],
        usage=None if usage is None else ResponseUsage(
            input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens),
        instructions=body.instructions, max_output_tokens=body.max_output_tokens,
        temperature=req.temperature, top_p=req.top_p, text=body.text or TextConfig(),
        tool_choice=body.tool_choice or "auto", metadata=body.metadata or {},
        user=body.user,
    )


RESPONSES = ResponsesEndpoint()
