"""vLLM's ``POST /tokenize`` and ``POST /detokenize``, at the root as vLLM serves them
(not under ``/v1``)."""

from __future__ import annotations

from fastapi import APIRouter

from ...auth import PrincipalDep
from ...deps import ServingDep, StateDep
from ..protocol import ERROR_RESPONSES
from . import serving
from .protocol import DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse

# Nothing is loaded or generated: no adapter load failures (422), no sequence slots (429).
RESPONSES = {status: doc for status, doc in ERROR_RESPONSES.items() if status not in (422, 429)}

router = APIRouter(tags=["vllm"], responses=RESPONSES)


@router.post("/tokenize", response_model=TokenizeResponse,
             summary="Token ids of a prompt or of chat messages, as inference makes them")
async def tokenize(req: TokenizeRequest, serving_: ServingDep, state: StateDep,
                   principal: PrincipalDep) -> TokenizeResponse:
    return await serving.tokenize(serving_, state, req, principal)


@router.post("/detokenize", response_model=DetokenizeResponse,
             summary="The text of token ids")
async def detokenize(req: DetokenizeRequest, serving_: ServingDep, state: StateDep,
                     principal: PrincipalDep) -> DetokenizeResponse:
    return await serving.detokenize(serving_, state, req, principal)
