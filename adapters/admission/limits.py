"""What goes into admission (the server's limits) and what comes out (the report)."""

from __future__ import annotations

from dataclasses import dataclass

from ..defaults import TaskDefaults


@dataclass(frozen=True)
class AdmissionLimits:
    """Server policy. ``max_lora_rank`` must equal the engine's ``max_lora_rank``."""

    max_lora_rank: int = 16
    #: Cap on the summed size of the adapter files (and on an uploaded archive's bytes);
    #: :func:`~.budget.fitted_limits` lowers it to what the base model's adapters can need.
    max_total_bytes: int = 1 << 30
    #: Cap on entries (files and directories) in a staged dir or archive.
    max_files: int = 32
    max_virtual_tokens: int = 1024
    peft_types: frozenset[str] = frozenset({"LORA"})


@dataclass(frozen=True)
class AdmissionReport:
    """What admission learned; the store turns it into a manifest."""

    peft_type: str
    #: Relative paths (POSIX) of the files the version keeps, sorted.
    files: tuple[str, ...]
    rank: int | None = None
    alpha: float | None = None
    target_modules: tuple[str, ...] = ()
    num_virtual_tokens: int | None = None
    declared_base_model: str | None = None
    warnings: tuple[str, ...] = ()
    #: ``hotswap.json``'s task defaults; None without the file (or with an empty one).
    defaults: TaskDefaults | None = None
