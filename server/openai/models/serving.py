"""The model list and one model's card: the base model first, then every servable
adapter id, as far as the caller's key may use them. No server paths: ``root`` is the
model's own id.

:func:`find` is the lookup of ``model`` for requests that only read (a model card,
tokenizing): the one ``ServedModels.resolve`` does, minus the hub pull, so reading about
a model never downloads one."""

from __future__ import annotations

from ....adapters.errors import AdapterNotFound, InvalidHubRepo, InvalidName
from ....adapters.manifest import Manifest
from ....adapters.names import DEFAULT_TAG
from ...auth import Principal
from ...deps import Serving
from ...engine.interface import KIND_OF_PEFT_TYPE
from ...errors import ModelNotFound
from ...serving.models import ServedAdapter
from ...serving.residency import Residencies
from .protocol import ModelCard, ModelList

#: Store names read per step of a page: a page needs ``limit`` + 1 ids after the key's
#: filter, and one name gives one id per tag.
_PAGE_STEP = 100


async def list_models(serving: Serving, principal: Principal, *, limit: int | None = None,
                      after: str | None = None) -> ModelList:
    """The base model, then every adapter id in (name, tag) order; or a page of that
    list: at most ``limit`` ids, those after the id ``after`` in that order (the ``last_id``
    of the previous page). ``after`` need not exist any more: a page goes on from where
    the id would be, so ids deleted between pages shift nothing."""
    models = serving.models
    with_base = after is None and principal.may_use(models.base_name)
    want = None if limit is None else limit + 1 - with_base  # one more: is there more?
    adapters = await _adapters_after(serving, principal, after, want)
    residency = await serving.table.residency()
    cards = [card(serving, a.model_id, a.manifest, residency) for a in adapters]
    if with_base:
        cards.insert(0, card(serving, models.base_name, None, None))
    has_more = limit is not None and len(cards) > limit
    cards = cards[:limit]
    return ModelList(data=cards, has_more=has_more,
                     first_id=cards[0].id if cards else None,
                     last_id=cards[-1].id if cards else None)


def id_key(model_id: str) -> tuple[str, str]:
    """An adapter id's place in the listing: (name, tag); a bare name is its latest tag.
    Not ``parse_ref``: a cursor is only a position, so an id that is not a valid ref (a
    hub id, one from another server) must not be refused."""
    name, _, tag = model_id.partition(":")
    return name, tag or DEFAULT_TAG


async def _adapters_after(serving: Serving, principal: Principal, after: str | None,
                          want: int | None) -> list[ServedAdapter]:
    """Up to ``want`` (None: all) adapter ids the key may use, after ``after``; reads the
    store a step of names at a time from ``after``'s name, not the whole store."""
    models = serving.models
    if want is None and after is None:
        return [a for a in await models.adapters() if principal.may_use(a.model_id)]
    key = None if after is None or after == models.base_name else id_key(after)
    start = None if key is None else key[0]
    out: list[ServedAdapter] = []
    while want is None or len(out) < want:
        # The first batch starts at the cursor's own name, whose ids up to the cursor are
        # not listed: one name more, so a full page needs one read, not two.
        own = int(key is not None and start == key[0])
        step = _PAGE_STEP if want is None else max(_PAGE_STEP, want - len(out) + own)
        batch = await models.adapters(start=start, limit=step)
        if not batch:
            break
        out += [a for a in batch if (key is None or id_key(a.model_id) > key)
                and principal.may_use(a.model_id)]
        # "\0" sorts before every character a name may hold: the least name after it.
        start = id_key(batch[-1].model_id)[0] + "\0"
    return out if want is None else out[:want]


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
