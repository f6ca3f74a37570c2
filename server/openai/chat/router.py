"""``POST /v1/chat/completions``: the schema in, the shared pipeline, the answer out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ...auth import PrincipalDep
from ..pipeline import PipelineDep
from ..protocol import ERROR_RESPONSES, SSE_RESPONSE
from .protocol import ChatCompletionRequest, ChatCompletionResponse
from .serving import CHAT

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERROR_RESPONSES)


@router.post(
    "/chat/completions", response_model=ChatCompletionResponse, responses=SSE_RESPONSE,
    summary="Chat completion with the base model or an adapter",
)
async def create_chat_completion(req: ChatCompletionRequest, pipeline: PipelineDep,
                                 principal: PrincipalDep) -> Any:
    return await pipeline.serve(CHAT, req, principal)
