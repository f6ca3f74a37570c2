"""Run the server's admission checks on this machine before uploading.

The server publishes what it checks against (``GET /v1/admission``: the base model's
shape facts and its limits); the checks themselves are the server's own code
(``hotswap.adapters.admission``), so a local pass means the upload will pass too, unless
the server's base model changes in between (adapterctl also checks the archive's size
against the server's cap). A refusal is found in seconds, without
sending a large file first.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ..adapters.admission import AdmissionLimits, AdmissionReport, BaseModelSpec, admit
from ..adapters.defaults import DEFAULTS_FILE
from ..adapters.sources.local import import_dir
from ..adapters.sources.upload import extract_archive


def policy_from(body: dict[str, Any]) -> tuple[BaseModelSpec, AdmissionLimits] | None:
    """``GET /v1/admission``'s body; None when the server cannot admit anything now."""
    base = body.get("base_model")
    if base is None:
        return None
    limits = AdmissionLimits(
        max_lora_rank=body["max_lora_rank"], max_total_bytes=body["max_total_bytes"],
        max_files=body["max_files"], max_virtual_tokens=body["max_virtual_tokens"],
        peft_types=frozenset(body["peft_types"]),
    )
    return BaseModelSpec(**base), limits


def check(path: Path, spec: BaseModelSpec, limits: AdmissionLimits,
          defaults: Path | None = None) -> AdmissionReport:
    """Admit a copy of ``path`` (a dir, or an archive of one) exactly as the server would:
    the same copy or extraction rules, then the same checks. ``defaults``: the file the
    upload sends as ``hotswap.json`` (``open_archive``'s). Raises ``AdmissionError``."""
    with tempfile.TemporaryDirectory(prefix="adapterctl-check-") as tmp:
        staged = Path(tmp)
        if path.is_dir():
            import_dir(path, staged, limits)
        else:
            with path.open("rb") as f:
                extract_archive(f, staged, limits)
        if defaults is not None:
            (staged / DEFAULTS_FILE).write_bytes(defaults.read_bytes())
        return admit(staged, spec, limits)
