"""Facts about the served base model that the adapter registry needs: its admission spec
(from ``config.json``) and the bytes of one full copy of its weights.

Kept out of the engine interface: a local model dir is read directly; for a Hugging Face
id the config is taken from the local HF cache, which the engine filled when it loaded
the model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..adapters.admission import BaseModelSpec

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def read_base_spec(model_ref: str) -> BaseModelSpec | None:
    """The admission spec of ``model_ref`` (dir or hub id); None, with a logged warning,
    when its config can not be read or its architecture takes no adapters."""
    try:
        config_path = _config_path(model_ref)
        config = json.loads(config_path.read_text())
        return BaseModelSpec.from_config(config, model_ref)
    except Exception as exc:  # any failure only disables admission; the model still serves
        log.warning("cannot read the base model config of %s: %s", model_ref, exc)
        return None


def _config_path(model_ref: str) -> Path:
    local = Path(model_ref)
    if local.is_dir():
        return local / "config.json"
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(model_ref, "config.json", local_files_only=True))


def weights_bytes(model_ref: str) -> int | None:
    """Bytes of the weight files of a local model dir; None for hub ids."""
    local = Path(model_ref)
    if not local.is_dir():
        return None
    return sum(p.stat().st_size for p in local.rglob("*")
               if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
