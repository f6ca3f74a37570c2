"""``GET /v1/models`` and ``GET /v1/models/{model_id}``."""

from __future__ import annotations

from fastapi import APIRouter

from ...auth import PrincipalDep
from ...deps import ServingDep
from ..protocol import ERROR_RESPONSES
from . import serving
from .protocol import ModelCard, ModelList

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERROR_RESPONSES)


@router.get("/models", response_model=ModelList, summary="The base model and every adapter")
async def list_models(serving_: ServingDep, principal: PrincipalDep) -> ModelList:
    return await serving.list_models(serving_, principal)


# ``:path``: ids hold "/" (hub repos, ``owner/name``) as well as ":" (``name:tag``).
@router.get("/models/{model_id:path}", response_model=ModelCard,
            summary="One model: the base model or an adapter, as the list shows it")
async def retrieve_model(model_id: str, serving_: ServingDep, principal: PrincipalDep
                         ) -> ModelCard:
    return await serving.retrieve_model(serving_, model_id, principal)
