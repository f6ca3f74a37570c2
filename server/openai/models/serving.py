"""The model list: the base model first, then every servable adapter id, as far as the
caller's key may use them. No server paths: ``root`` is the model's own id."""

from __future__ import annotations

from ...auth import Principal
from ...deps import Serving
from .protocol import ModelCard, ModelList


async def list_models(serving: Serving, principal: Principal) -> ModelList:
    models, engine = serving.models, serving.engine
    base = ModelCard(
        id=models.base_name, created=models.created, root=models.base_name,
        max_model_len=engine.max_model_len, kind="base",
        size_bytes=serving.service.base_model_bytes,
    )
    adapters = [a for a in await models.adapters() if principal.may_use(a.model_id)]
    residency = await serving.table.residency()
    cards = [
        ModelCard(
            id=a.model_id, created=int(a.manifest.created_at.timestamp()),
            root=a.model_id, parent=models.base_name,
            max_model_len=engine.max_model_len, kind=a.spec.kind,
            digest=a.manifest.digest, peft_type=a.manifest.peft_type, rank=a.manifest.rank,
            num_virtual_tokens=a.manifest.num_virtual_tokens,
            size_bytes=a.manifest.size_bytes, residency=residency.of(a.manifest.digest),
        )
        for a in adapters
    ]
    return ModelList(data=[base, *cards] if principal.may_use(models.base_name) else cards)
