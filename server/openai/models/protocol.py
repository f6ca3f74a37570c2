"""Wire schema of ``/v1/models``: OpenAI's model list, with hotswap's adapter facts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from ....adapters.defaults import TaskDefaults
from ...engine.interface import Residency


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "hotswap"
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None
    #: hotswap extension: "base", or how the adapter is applied: "lora", "prompt"
    #: (prompt tuning, P-tuning) or "prefix" (prefix tuning).
    kind: str | None = None
    #: hotswap extensions for adapters: the stored version serving this id.
    digest: str | None = None
    peft_type: str | None = None
    rank: int | None = None
    #: Prompt and prefix adapters: positions put in front of every prompt (they count
    #: against max_model_len; usage.prompt_tokens counts only the client's tokens).
    num_virtual_tokens: int | None = None
    #: Bytes on disk: the adapter's files, or for the base model its weights (if known).
    size_bytes: int | None = None
    #: Adapters: where the engine holds the weights now. "gpu": in a slot a batch can
    #: use (host memory on the CPU build); "cpu": in the engine's host cache; "disk":
    #: not loaded. None for the base model, or if the engine could not tell.
    residency: Residency | None = None
    #: Adapters: the version's task defaults (its ``hotswap.json``), applied to a request
    #: that does not set these fields itself. None: none (and for the base model).
    defaults: TaskDefaults | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
    #: Cursor paging (``?limit=N&after=ID``), as OpenAI's paged lists: whether ids
    #: follow this page, and its first and last id (``after`` of the next page).
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None
