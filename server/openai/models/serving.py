"""The model list: the base model first, then every servable adapter id."""

from __future__ import annotations

from ...deps import Serving
from .protocol import ModelCard, ModelList


async def list_models(serving: Serving) -> ModelList:
    models, engine = serving.models, serving.engine
    base = ModelCard(
        id=models.base_name, created=models.created, root=models.base_name,
        max_model_len=engine.max_model_len, kind="base",
        size_bytes=serving.service.base_model_bytes,
    )
    adapters = await models.adapters()
    residency = await serving.table.residency()
    cards = [
        ModelCard(
            id=a.model_id, created=int(a.manifest.created_at.timestamp()),
            root=str(a.spec.path), parent=models.base_name,
            max_model_len=engine.max_model_len, kind=a.spec.kind,
            digest=a.manifest.digest, peft_type=a.manifest.peft_type, rank=a.manifest.rank,
            size_bytes=a.manifest.size_bytes, residency=residency.of(a.manifest.digest),
        )
        for a in adapters
    ]
    return ModelList(data=[base, *cards])
