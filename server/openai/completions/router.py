"""``POST /v1/completions``: the schema in, the shared pipeline, the answer out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ...auth import PrincipalDep
from ..pipeline import PipelineDep
from ..protocol import ERROR_RESPONSES, SSE_RESPONSE
from .protocol import CompletionRequest, CompletionResponse
from .serving import COMPLETIONS

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERROR_RESPONSES)


@router.post(
    "/completions", response_model=CompletionResponse, responses=SSE_RESPONSE,
    summary="Text completion with the base model or an adapter",
)
async def create_completion(req: CompletionRequest, pipeline: PipelineDep,
                            principal: PrincipalDep) -> Any:
    return await pipeline.serve(COMPLETIONS, req, principal)
