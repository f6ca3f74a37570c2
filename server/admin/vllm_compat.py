"""vLLM's ``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter``, for tools built for
vLLM. Paths only under ``--import-root``; the same admission as every other adapter."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from ...adapters.errors import AdapterError, AdapterNotFound
from ...adapters.names import validate_name
from ..auth import PrincipalDep
from ..deps import ModelsDep, ServiceDep
from ..errors import AdapterExists
from .protocol import LoadLoraAdapterRequest, UnloadLoraAdapterRequest
from .responses import COMMON, JSON_BODY, Responses, json_errors

#: Success is a text/plain sentence, as vLLM answers; every error is an OpenAI error body.
PLAIN_OK: Responses = {
    200: {"content": {"text/plain": {"schema": {"type": "string"}}},
          "description": "Success message, as vLLM answers"},
    **json_errors(*COMMON, *JSON_BODY),
}
LOAD_ERRORS = json_errors(400, 403, 413, 422, 507, why={
    400: "Malformed lora_name, a name already loaded, or no adapter dir at lora_path",
    403: "lora_path outside every --import-root, the key lacks the scope or the name is "
         "outside its policy",
})
UNLOAD_ERRORS = json_errors(404)

router = APIRouter(prefix="/v1", tags=["adapters"], responses=PLAIN_OK)


@router.post("/load_lora_adapter", response_class=PlainTextResponse, responses=LOAD_ERRORS,
             summary="vLLM-compatible: import a server-side adapter dir and load it")
async def load_lora_adapter(body: LoadLoraAdapterRequest, service: ServiceDep,
                            models: ModelsDep, principal: PrincipalDep) -> PlainTextResponse:
    name = validate_name(body.lora_name)
    principal.check_manage(name)
    try:
        await service.resolve(name)
    except AdapterNotFound:
        pass
    else:
        raise AdapterExists(f"The lora adapter '{name}' has already been loaded.",
                            param="lora_name")
    try:
        path = await service.check_import_path(body.lora_path)
    except AdapterError as exc:
        exc.param = "lora_path"
        raise
    manifest = await service.import_dir(name, path)
    await models.register(manifest, load=True)
    return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")


@router.post("/unload_lora_adapter", response_class=PlainTextResponse,
             responses=UNLOAD_ERRORS,
             summary="vLLM-compatible: stop serving an adapter (deletes the name)")
async def unload_lora_adapter(body: UnloadLoraAdapterRequest, models: ModelsDep,
                              principal: PrincipalDep) -> PlainTextResponse:
    principal.check_manage(body.lora_name)
    await models.delete(body.lora_name)
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")
