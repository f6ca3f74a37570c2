"""The soak's core (bench/soak_core/) for the tests, and adapter archives for it.

bench/soak.py and tests/integration/test_soak.py run the same core: it lives with the
bench (which must not import tests/support) and imports nothing of bench/ or tests/, so
it is loaded here by its path, as the package ``soak_core``, without putting bench/ on
``sys.path`` (its ``common`` module would then shadow nothing, but stay importable).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from types import ModuleType

import torch
from hotswap.adapters.admission import BaseModelSpec

from support.bench_core import load_bench_package
from support.loras import write_lora

# Random N(0, 1) weights scaled to this std: the answers of two versions differ clearly
# (the soak counts pairs it cannot tell apart) while staying text, as with peft_ref's.
WEIGHT_STD = 0.08


def load_core() -> ModuleType:
    """bench/soak_core as the module ``soak_core`` (loaded once per process)."""
    return load_bench_package("soak_core")


class Archives:
    """seed -> a tar of a rank-8 q_proj/v_proj LoRA for the base model (the soak's
    ArchiveFactory), written with support.loras."""

    def __init__(self, base_model_dir: Path, work: Path) -> None:
        config = json.loads((base_model_dir / "config.json").read_text())
        self.spec = BaseModelSpec.from_config(config, str(base_model_dir))
        self.work = work

    def __call__(self, seed: int) -> bytes:
        out = write_lora(self.work / f"lora-{seed}", self.spec, rank=8,
                         modules=("q_proj", "v_proj"), seed=seed,
                         config={"lora_alpha": 8}, edit=_scale)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name in ("adapter_config.json", "adapter_model.safetensors"):
                tar.add(out / name, arcname=name)
        return buf.getvalue()


def _scale(tensors: dict[str, torch.Tensor]) -> None:
    for t in tensors.values():
        t.mul_(WEIGHT_STD)
