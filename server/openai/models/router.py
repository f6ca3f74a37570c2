"""``GET /v1/models`` and ``GET /v1/models/{model_id}``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ...auth import PrincipalDep
from ...deps import ServingDep
from ..protocol import ERROR_RESPONSES
from . import serving
from .protocol import ModelCard, ModelList

#: Largest page: a page is one JSON body, built in one piece.
MAX_PAGE = 1000
#: Longer than any id the server can list (``name:tag``, or a hub repo id with revision).
MAX_ID_CHARS = 512

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERROR_RESPONSES)


@router.get("/models", response_model=ModelList, summary="The base model and every adapter")
async def list_models(
    serving_: ServingDep, principal: PrincipalDep,
    limit: Annotated[int | None, Query(
        ge=1, le=MAX_PAGE,
        description="At most this many models (default: all). The base model comes "
        "first, then adapters in (name, tag) order; has_more says if more follow.")] = None,
    after: Annotated[str | None, Query(
        min_length=1, max_length=MAX_ID_CHARS,
        description="Models after this id in that order: the last_id of the previous "
        "page.")] = None,
) -> ModelList:
    return await serving.list_models(serving_, principal, limit=limit, after=after)


# ``:path``: ids hold "/" (hub repos, ``owner/name``) as well as ":" (``name:tag``).
@router.get("/models/{model_id:path}", response_model=ModelCard,
            summary="One model: the base model or an adapter, as the list shows it")
async def retrieve_model(model_id: str, serving_: ServingDep, principal: PrincipalDep
                         ) -> ModelCard:
    return await serving.retrieve_model(serving_, model_id, principal)
