"""The entry point :func:`admit`: every check in order, and the rule for each PEFT type."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from ..defaults import DEFAULTS_FILE, read_defaults
from ..errors import BadDtype, UnsupportedPeftType
from .base_model import BaseModelSpec
from .files import (
    CONFIG_FILE,
    FLOAT_DTYPES,
    WEIGHTS_FILE,
    check_finite,
    read_config,
    read_header,
    select_files,
)
from .limits import AdmissionLimits, AdmissionReport
from .lora import LoraRule
from .prompt import PrefixTuningRule, PromptTuningRule
from .rule import PeftRule

logger = logging.getLogger(__name__)

RULES: Mapping[str, PeftRule] = {
    "LORA": LoraRule(),
    "PROMPT_TUNING": PromptTuningRule(),
    "P_TUNING": PromptTuningRule(),
    "PREFIX_TUNING": PrefixTuningRule(),
}


def admit(adapter_dir: Path, spec: BaseModelSpec, limits: AdmissionLimits) -> AdmissionReport:
    """Run every check on ``adapter_dir``; raise the first failure, else return the report."""
    kept, warnings = select_files(adapter_dir, limits)

    config = read_config(adapter_dir / CONFIG_FILE)
    peft_type = config.get("peft_type")
    rule = RULES.get(peft_type) if isinstance(peft_type, str) else None
    if rule is None or peft_type not in limits.peft_types:
        known = "is not enabled on this server" if rule is not None else "is not supported"
        raise UnsupportedPeftType(
            f"peft_type {peft_type!r} {known} (accepted: {sorted(limits.peft_types)})"
        )

    weights = adapter_dir / WEIGHTS_FILE
    tensors = read_header(weights)
    for name, info in tensors.items():
        if info.dtype not in FLOAT_DTYPES:
            raise BadDtype(
                f"tensor {name} has dtype {info.dtype}; adapter weights must be one of "
                f"{sorted(FLOAT_DTYPES)}"
            )
    result = rule.check(config, tensors, spec, limits)
    # Before the values: a bad hotswap.json is found without reading any weight.
    defaults = read_defaults(adapter_dir / DEFAULTS_FILE) if DEFAULTS_FILE in kept else None
    check_finite(weights)

    declared = config.get("base_model_name_or_path")
    declared = declared if isinstance(declared, str) and declared else None
    if declared is not None and not _loosely_same_model(declared, spec.model_id):
        # Shapes already matched, so this is only a hint: local paths and mirrors differ.
        warnings.append(
            f"adapter declares base model {declared!r}, server runs {spec.model_id!r}; "
            "shapes match, so it was admitted"
        )
    warnings.extend(result.warnings)
    for w in warnings:
        logger.warning("admission of %s: %s", adapter_dir, w)
    return AdmissionReport(
        peft_type=str(peft_type),
        files=tuple(sorted(kept)),
        rank=result.rank,
        alpha=result.alpha,
        target_modules=result.target_modules,
        num_virtual_tokens=result.num_virtual_tokens,
        declared_base_model=declared,
        warnings=tuple(warnings),
        defaults=None if defaults is None or defaults.is_empty() else defaults,
    )


def _loosely_same_model(declared: str, model_id: str) -> bool:
    """Compare last path components case-insensitively; containment counts as equal
    (``HuggingFaceTB/SmolLM2-135M-Instruct`` ~ ``/models/SmolLM2-135M-Instruct-v1``)."""
    a = declared.rstrip("/").rsplit("/", 1)[-1].lower()
    b = model_id.rstrip("/").rsplit("/", 1)[-1].lower()
    return a in b or b in a
