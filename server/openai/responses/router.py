"""``POST /v1/responses``: the schema in, the shared pipeline, the answer out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ...auth import PrincipalDep
from ..pipeline import PipelineDep
from ..protocol import ERROR_RESPONSES, SSE_RESPONSE
from .protocol import PipelineRequest, ResponseObject, ResponsesRequest
from .serving import RESPONSES

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERROR_RESPONSES)


@router.post(
    "/responses", response_model=ResponseObject, responses=SSE_RESPONSE,
    summary="Response (OpenAI's Responses API) from the base model or an adapter",
)
async def create_response(req: ResponsesRequest, pipeline: PipelineDep,
                          principal: PrincipalDep) -> Any:
    return await pipeline.serve(RESPONSES, PipelineRequest.of(req), principal)
