"""How the adapter service is opened: what ``cli.py`` (or a test) builds from settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .admission import AdmissionLimits, BaseModelSpec
from .store import GC_GRACE_S


@dataclass(frozen=True)
class HubOptions:
    """Pulling adapters from a Hugging Face Hub endpoint."""

    #: ``owner/name``, ``owner`` or ``*``; empty: every pull is refused.
    allow: tuple[str, ...] = ()
    #: Pull an allowed repo when a request names it as ``model`` and the store lacks it.
    autoload: bool = False
    #: Disk budget of hub-pulled refs (LRU); None: never evict.
    cache_bytes: int | None = None
    #: None: huggingface_hub's own lookups (``HF_TOKEN``, ``HF_ENDPOINT``).
    token: str | None = None
    endpoint: str | None = None


@dataclass(frozen=True)
class ServiceOptions:
    """How the server opens its adapter service (built by ``cli.py``, or by tests)."""

    store_dir: Path
    #: Reads the served model's config for admission. Called once the engine is up: a
    #: hub model's config.json is in the local HF cache only after the engine fetched it.
    #: ``None`` (with a logged reason) makes the service read-only.
    base_spec: Callable[[], BaseModelSpec | None]
    limits: AdmissionLimits = field(default_factory=AdmissionLimits)
    import_roots: tuple[Path, ...] = ()
    #: Bytes of one full copy of the base model's weights (for the storage comparison).
    base_model_bytes: int | None = None
    hub: HubOptions = field(default_factory=HubOptions)
    #: How long a version's files outlive its last ref (other replicas sharing the store
    #: may still serve it, or reload it from disk): see :meth:`Store.gc`.
    gc_grace_s: float = GC_GRACE_S
    #: Uploads at once (each holds up to the size cap on disk while it arrives).
    max_uploads: int = 4
    #: Seconds an upload body may send nothing before it is refused.
    upload_idle_timeout_s: float = 30.0
    #: Bytes all stored versions may take together; None: no budget.
    store_max_bytes: int | None = None
    #: ``bucket`` or ``bucket/prefix`` that S3 pulls may read; empty: every pull refused.
    s3_allow: tuple[str, ...] = ()
    #: Watched directories and ``s3://`` prefixes (:mod:`.watch`), and how often each is
    #: listed.
    watch: tuple[str, ...] = ()
    watch_interval_s: float = 30.0
