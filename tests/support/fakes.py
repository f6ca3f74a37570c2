"""Small helpers for tests on the fake engine: a tiny Llama-shaped base model spec and
PEFT-layout LoRA dirs that pass (or, on request, fail) the store's admission checks."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

from hotswap.adapters.admission import AdmissionLimits, BaseModelSpec
from hotswap.adapters.service import ServiceOptions

from support.loras import write_lora

# Same GQA layout as SmolLM2 (heads/kv = 3, explicit head_dim), scaled down so tensors
# are tiny: q_proj and o_proj 96->96, k/v_proj 96->32, gate/up 96->128, down 128->96.
# Complete enough for transformers.LlamaConfig (PEFT reference tests) and admission.
TINY_LLAMA_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 96,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 128,
    "tie_word_embeddings": True,
}
TINY_SPEC = BaseModelSpec.from_config(TINY_LLAMA_CONFIG, "tiny-llama")
LIMITS = AdmissionLimits(max_lora_rank=8, max_total_bytes=1 << 20, max_files=16)


def service_options(root: Path, import_roots: tuple[Path, ...] = ()) -> ServiceOptions:
    return ServiceOptions(store_dir=root / "store", base_spec=lambda: TINY_SPEC,
                           limits=LIMITS, import_roots=import_roots, base_model_bytes=123456)


def make_adapter_dir(root: Path, name: str, *, rank: int = 4, seed: int = 0,
                     modules: tuple[str, ...] = ("q_proj", "v_proj"),
                     config: dict[str, Any] | None = None) -> Path:
    """A LoRA dir ``root/name`` for TINY_SPEC; ``seed`` changes the weights (and so the
    digest)."""
    return write_lora(root / name, TINY_SPEC, rank=rank, seed=seed, modules=modules,
                      config=config)


def tar_gz(adapter_dir: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(adapter_dir, arcname=adapter_dir.name)
    return buf.getvalue()
