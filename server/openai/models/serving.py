"""The model list and one model's card: the base model first, then every servable
adapter id, as far as the caller's key may use them. No server paths: ``root`` is the
model's own id.

:func:`find` is the lookup of ``model`` for requests that only read (a model card,
tokenizing): the one ``ServedModels.resolve`` does, minus the hub pull, so reading about
a model never downloads one."""

from __future__ import annotations

from ....adapters.errors import AdapterNotFound, InvalidHubRepo, InvalidName
from ....adapters.manifest import Manifest
from ...auth import Principal
from ...deps import Serving
from ...engine.interface import KIND_OF_PEFT_TYPE
from ...errors import ModelNotFound
from ...serving.residency import Residencies
from .protocol import ModelCard, ModelList


async def list_models(serving: Serving, principal: Principal) -> ModelList:
    models = serving.models
    adapters = [a for a in await models.adapters() if principal.may_use(a.model_id)]
    residency = await serving.table.residency()
    cards = [card(serving, a.model_id, a.manifest, residency) for a in adapters]
    if principal.may_use(models.base_name):
        cards.insert(0, card(serving, models.base_name, None, None))
    return ModelList(data=cards)


async def retrieve_model(serving: Serving, model_id: str, principal: Principal) -> ModelCard:
    """The card ``GET /v1/models`` lists for ``model_id`` (under the id asked for: a hub
    id, or ``name:latest``, names the same version as the listing's ``name``)."""
    manifest = await find(serving, model_id, principal)
    residency = None if manifest is None else await serving.table.residency()
    return card(serving, model_id, manifest, residency)


def card(serving: Serving, model_id: str, manifest: Manifest | None,
         residency: Residencies | None) -> ModelCard:
    """The card of the base model (``manifest`` None) or of a stored adapter version."""
    models, engine = serving.models, serving.engine
    if manifest is None:
        return ModelCard(
            id=model_id, created=models.created, root=model_id,
            max_model_len=engine.max_model_len, kind="base",
            size_bytes=serving.service.base_model_bytes,
        )
    return ModelCard(
        id=model_id, created=int(manifest.created_at.timestamp()),
        root=model_id, parent=models.base_name,
        max_model_len=engine.max_model_len, kind=KIND_OF_PEFT_TYPE[manifest.peft_type],
        digest=manifest.digest, peft_type=manifest.peft_type, rank=manifest.rank,
        num_virtual_tokens=manifest.num_virtual_tokens, size_bytes=manifest.size_bytes,
        residency=None if residency is None else residency.of(manifest.digest),
        defaults=manifest.defaults,
    )


async def find(serving: Serving, model_id: str, principal: Principal) -> Manifest | None:
    """The stored version ``model_id`` names (None: the base model), read from the store
    now, as a request for it would be. ModelNotFound for an id the key may not use, and
    for one not stored here: a hub repo counts only once pulled (and while
    ``--hub-allow`` still permits it), even under ``--hub-autoload``."""
    principal.check_model(model_id)
    if model_id == serving.models.base_name:
        return None
    try:
        return await serving.service.resolve(model_id, pull=False)
    except (AdapterNotFound, InvalidName, InvalidHubRepo):
        raise ModelNotFound(model_id) from None
