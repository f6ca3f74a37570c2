"""``GET /v1/models``."""

from __future__ import annotations

from fastapi import APIRouter

from ...auth import PrincipalDep
from ...deps import ServingDep
from ..protocol import ERROR_RESPONSES
from . import serving
from .protocol import ModelList

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERROR_RESPONSES)


@router.get("/models", response_model=ModelList, summary="The base model and every adapter")
async def list_models(serving_: ServingDep, principal: PrincipalDep) -> ModelList:
    return await serving.list_models(serving_, principal)
