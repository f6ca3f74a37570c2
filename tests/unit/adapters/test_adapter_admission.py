"""Admission: one crafted adapter per check, each asserting the specific error code."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from adapter_fixtures import SMOLLM2_CONFIG, TINY_LLAMA_CONFIG, MakeLora, lora_key
from hotswap.adapters import errors
from hotswap.adapters.admission import (
    MAX_CARD_BYTES,
    MAX_CONFIG_BYTES,
    AdmissionLimits,
    BaseModelSpec,
    admit,
)
from safetensors.torch import save_file


def refused(path: Path, spec: BaseModelSpec, limits: AdmissionLimits) -> errors.AdmissionError:
    with pytest.raises(errors.AdmissionError) as info:
        admit(path, spec, limits)
    return info.value


# --- base model spec ---------------------------------------------------------------------


def test_spec_from_smollm2_config_derives_projection_shapes() -> None:
    smollm2 = SMOLLM2_CONFIG
    spec = BaseModelSpec.from_config(smollm2, "smollm2")
    shapes = {m: (s.in_features, s.out_features) for m, s in spec.modules().items()}
    assert shapes == {
        "q_proj": (576, 576),
        "k_proj": (576, 192),
        "v_proj": (576, 192),
        "o_proj": (576, 576),
        "gate_proj": (576, 1536),
        "up_proj": (576, 1536),
        "down_proj": (1536, 576),
    }
    # head_dim and num_key_value_heads are optional in HF configs.
    minimal = {k: v for k, v in smollm2.items() if k not in ("head_dim", "num_key_value_heads")}
    spec2 = BaseModelSpec.from_config(minimal, "smollm2")
    assert (spec2.head_dim, spec2.num_key_value_heads) == (64, 9)
    assert spec2.fingerprint != spec.fingerprint
    assert BaseModelSpec.from_config(smollm2, "elsewhere").fingerprint == spec.fingerprint


def test_spec_refuses_unsupported_architecture() -> None:
    with pytest.raises(ValueError, match="gpt2"):
        BaseModelSpec.from_config({"model_type": "gpt2", "n_embd": 768}, "gpt2")
    with pytest.raises(ValueError, match="hidden_size"):
        BaseModelSpec.from_config({"model_type": "llama"}, "broken")


# --- accepted adapters -------------------------------------------------------------------


def test_valid_lora_is_admitted(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    path = make_lora(tmp_path / "a", rank=4, modules=("q_proj", "v_proj", "down_proj"))
    report = admit(path, spec, limits)
    assert report.peft_type == "LORA"
    assert (report.rank, report.alpha) == (4, 8.0)
    assert report.target_modules == ("down_proj", "q_proj", "v_proj")
    assert report.files == ("adapter_config.json", "adapter_model.safetensors")
    assert report.warnings == ()


def test_bf16_and_unprefixed_keys_are_admitted(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    def strip_prefix(t: dict[str, torch.Tensor]) -> None:
        for k in list(t):
            t[k.removeprefix("base_model.model.")] = t.pop(k)

    path = make_lora(tmp_path / "a", dtype=torch.bfloat16, edit=strip_prefix)
    assert admit(path, spec, limits).rank == 4


def test_real_peft_adapter_is_admitted(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits
) -> None:
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(**TINY_LLAMA_CONFIG)
    model = transformers.LlamaForCausalLM(config)
    lora = peft.LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    peft.get_peft_model(model, lora).save_pretrained(tmp_path / "peft")
    report = admit(tmp_path / "peft", spec, limits)
    assert report.rank == 8
    assert report.target_modules == tuple(sorted(spec.modules()))
    assert "README.md" in report.files


def test_extra_files_are_dropped_with_a_warning(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    path = make_lora(tmp_path / "a")
    (path / "README.md").write_text("# card")
    (path / "tokenizer.json").write_text("{}")
    (path / "sub").mkdir()
    (path / "sub" / "notes.txt").write_text("x")
    report = admit(path, spec, limits)
    assert report.files == ("README.md", "adapter_config.json", "adapter_model.safetensors")
    assert any("tokenizer.json" in w for w in report.warnings)
    assert any("sub/notes.txt" in w for w in report.warnings)


def test_oversized_model_card_is_dropped_and_oversized_config_refused(
    tmp_path: Path, spec: BaseModelSpec, make_lora: MakeLora
) -> None:
    roomy = AdmissionLimits(max_lora_rank=8, max_total_bytes=8 << 20)
    path = make_lora(tmp_path / "a")
    (path / "README.md").write_bytes(b"#" * MAX_CARD_BYTES)
    assert "README.md" in admit(path, spec, roomy).files
    (path / "README.md").write_bytes(b"#" * (MAX_CARD_BYTES + 1))
    report = admit(path, spec, roomy)
    assert "README.md" not in report.files
    assert any("README.md" in w and "cap" in w for w in report.warnings)
    config = path / "adapter_config.json"
    config.write_text(config.read_text()[:-1] + ', "pad": "' + "x" * MAX_CONFIG_BYTES + '"}')
    assert refused(path, spec, roomy).code == "invalid_adapter_config"


def test_other_base_model_name_only_warns(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    path = make_lora(tmp_path / "a", config={"base_model_name_or_path": "meta-llama/Llama-3-8B"})
    report = admit(path, spec, limits)
    assert report.declared_base_model == "meta-llama/Llama-3-8B"
    assert len(report.warnings) == 1 and "Llama-3-8B" in report.warnings[0]
    # A local path ending in the same model name is the same model.
    path2 = make_lora(
        tmp_path / "b", config={"base_model_name_or_path": "/models/tiny-llama-test/"}
    )
    assert admit(path2, spec, limits).warnings == ()


# --- adapter_config.json -----------------------------------------------------------------


def test_bad_json_is_refused(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    path = make_lora(tmp_path / "a")
    (path / "adapter_config.json").write_text('{"peft_type": "LORA", ')
    assert refused(path, spec, limits).code == "invalid_adapter_config"


def test_missing_config_is_refused(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    path = make_lora(tmp_path / "a")
    (path / "adapter_config.json").unlink()
    assert refused(path, spec, limits).code == "invalid_adapter_config"


def test_unknown_peft_type_is_refused(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    path = make_lora(tmp_path / "a", config={"peft_type": "IA3"})
    err = refused(path, spec, limits)
    assert err.code == "unsupported_peft_type" and "not supported" in err.message


@pytest.mark.parametrize(
    "option, value",
    [
        ("use_dora", True),
        ("modules_to_save", ["lm_head"]),
        ("rank_pattern", {"q_proj": 2}),
        ("bias", "all"),
        ("fan_in_fan_out", True),
    ],
)
def test_unsupported_lora_option_is_refused(
    tmp_path: Path,
    spec: BaseModelSpec,
    limits: AdmissionLimits,
    make_lora: MakeLora,
    option: str,
    value: Any,
) -> None:
    path = make_lora(tmp_path / "a", config={option: value})
    assert refused(path, spec, limits).code == "unsupported_feature"


def test_dora_magnitude_tensor_is_refused(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    def add_magnitude(t: dict[str, torch.Tensor]) -> None:
        t["base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"] = torch.ones(96)

    path = make_lora(tmp_path / "a", edit=add_magnitude)
    assert refused(path, spec, limits).code == "unsupported_feature"


# --- files -------------------------------------------------------------------------------


class _Boom:
    """Unpickling this creates a marker directory: proof that something unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("filename", ["adapter_model.bin", "training_args.bin", "x.PT", "a.ckpt"])
def test_pickle_file_is_refused_and_never_unpickled(
    tmp_path: Path,
    spec: BaseModelSpec,
    limits: AdmissionLimits,
    make_lora: MakeLora,
    filename: str,
) -> None:
    path = make_lora(tmp_path / "a")
    marker = tmp_path / "unpickled"
    (path / filename).write_bytes(pickle.dumps(_Boom(marker)))
    err = refused(path, spec, limits)
    assert err.code == "pickle_refused" and filename in err.message
    assert not marker.exists()


def test_pickle_only_adapter_says_pickle_not_missing(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    path = make_lora(tmp_path / "a")
    (path / "adapter_model.safetensors").rename(path / "adapter_model.bin")
    assert refused(path, spec, limits).code == "pickle_refused"


def test_missing_safetensors_is_refused(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    path = make_lora(tmp_path / "a")
    (path / "adapter_model.safetensors").unlink()
    assert refused(path, spec, limits).code == "missing_weights"


def test_empty_safetensors_is_refused(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    path = make_lora(tmp_path / "a", edit=lambda t: t.clear())
    assert refused(path, spec, limits).code == "missing_weights"


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_safetensors_is_refused(
    tmp_path: Path,
    spec: BaseModelSpec,
    limits: AdmissionLimits,
    make_lora: MakeLora,
    keep: float,
) -> None:
    path = make_lora(tmp_path / "a")
    weights = path / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: int(len(data) * keep)])
    assert refused(path, spec, limits).code == "corrupt_weights"


def test_garbage_header_is_refused(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    path = make_lora(tmp_path / "a")
    # Header length says 2**60 bytes: a naive reader would try to allocate it.
    (path / "adapter_model.safetensors").write_bytes((1 << 60).to_bytes(8, "little") + b"{}")
    assert refused(path, spec, limits).code == "corrupt_weights"


def test_too_many_bytes_is_refused(
    tmp_path: Path, spec: BaseModelSpec, make_lora: MakeLora
) -> None:
    path = make_lora(tmp_path / "a")
    small = AdmissionLimits(max_total_bytes=1000)
    assert refused(path, spec, small).code == "adapter_too_large"


def test_too_many_files_is_refused(
    tmp_path: Path, spec: BaseModelSpec, make_lora: MakeLora
) -> None:
    path = make_lora(tmp_path / "a")
    for i in range(5):
        (path / f"note{i}.txt").write_text("x")
    assert refused(path, spec, AdmissionLimits(max_files=4)).code == "adapter_too_large"


def test_symlink_in_adapter_dir_is_refused(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    path = make_lora(tmp_path / "a")
    (path / "README.md").symlink_to("/etc/passwd")
    assert refused(path, spec, limits).code == "unsafe_path"


# --- tensors against the base model ------------------------------------------------------


def test_rank_above_max_is_refused(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    path = make_lora(tmp_path / "a", rank=16)
    err = refused(path, spec, limits)
    assert err.code == "rank_too_high" and "16" in err.message


def test_unknown_target_module_in_config_is_refused(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    path = make_lora(tmp_path / "a", config={"target_modules": ["c_attn", "c_proj"]})
    assert refused(path, spec, limits).code == "unknown_target_module"


def test_unknown_target_module_in_tensors_is_refused(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    def gpt2_style(t: dict[str, torch.Tensor]) -> None:
        t["base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"] = torch.zeros(4, 64)

    path = make_lora(tmp_path / "a", config={"target_modules": "all-linear"}, edit=gpt2_style)
    assert refused(path, spec, limits).code == "unknown_target_module"


def test_module_under_wrong_parent_is_refused(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    def misplace(t: dict[str, torch.Tensor]) -> None:
        for which in "AB":
            key = lora_key(0, "q_proj", which)
            t[key.replace("self_attn", "mlp")] = t.pop(key)

    path = make_lora(tmp_path / "a", edit=misplace)
    assert refused(path, spec, limits).code == "unknown_target_module"


@pytest.mark.parametrize("module", ["lm_head", "embed_tokens"])
def test_embedding_and_lm_head_targets_are_unsupported(
    tmp_path: Path,
    spec: BaseModelSpec,
    limits: AdmissionLimits,
    make_lora: MakeLora,
    module: str,
) -> None:
    path = make_lora(tmp_path / "a", config={"target_modules": ["q_proj", module]})
    assert refused(path, spec, limits).code == "unsupported_target_module"


def test_lm_head_tensor_is_unsupported(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    def add_lm_head(t: dict[str, torch.Tensor]) -> None:
        t["base_model.model.lm_head.lora_A.weight"] = torch.zeros(4, 64)
        t["base_model.model.lm_head.lora_B.weight"] = torch.zeros(128, 4)

    path = make_lora(tmp_path / "a", edit=add_lm_head)
    assert refused(path, spec, limits).code == "unsupported_target_module"


def test_adapter_for_another_hidden_size_is_refused(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    # Trained on a model with hidden_size 192: attention lora_A are [r, 192].
    bigger = BaseModelSpec.from_config({**TINY_LLAMA_CONFIG, "hidden_size": 192}, "bigger")

    def reshape(t: dict[str, torch.Tensor]) -> None:
        for m, s in bigger.modules().items():
            for layer in (0, 1):
                t[lora_key(layer, m, "A")] = torch.zeros(4, s.in_features)
                t[lora_key(layer, m, "B")] = torch.zeros(s.out_features, 4)

    path = make_lora(tmp_path / "b", edit=reshape)
    err = refused(path, spec, limits)
    assert err.code == "base_model_mismatch" and "another base model" in err.message


def test_adapter_for_more_layers_is_refused(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    path = make_lora(tmp_path / "a", layers=(0, 1, 2))
    assert refused(path, spec, limits).code == "base_model_mismatch"


def test_lora_b_with_other_rank_is_malformed(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    def bad_b(t: dict[str, torch.Tensor]) -> None:
        t[lora_key(0, "q_proj", "B")] = torch.zeros(96, 3)

    path = make_lora(tmp_path / "a", edit=bad_b)
    assert refused(path, spec, limits).code == "malformed_weights"


def test_lora_a_without_b_is_malformed(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    path = make_lora(tmp_path / "a", edit=lambda t: t.pop(lora_key(1, "up_proj", "B")))
    assert refused(path, spec, limits).code == "malformed_weights"


def test_tensor_rank_disagreeing_with_config_is_malformed(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    path = make_lora(tmp_path / "a", rank=4, config={"r": 8})
    assert refused(path, spec, limits).code == "malformed_weights"


def test_unexpected_tensor_is_refused(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    def extra(t: dict[str, torch.Tensor]) -> None:
        t["base_model.model.model.norm.weight"] = torch.ones(64)

    path = make_lora(tmp_path / "a", edit=extra)
    assert refused(path, spec, limits).code == "unexpected_tensor"


@pytest.mark.parametrize("dtype", [torch.int32, torch.int8, torch.bool])
def test_non_float_dtype_is_refused(
    tmp_path: Path,
    spec: BaseModelSpec,
    limits: AdmissionLimits,
    make_lora: MakeLora,
    dtype: torch.dtype,
) -> None:
    path = make_lora(tmp_path / "a", dtype=dtype)
    assert refused(path, spec, limits).code == "bad_dtype"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused(
    tmp_path: Path,
    spec: BaseModelSpec,
    limits: AdmissionLimits,
    make_lora: MakeLora,
    value: float,
) -> None:
    def poison(t: dict[str, torch.Tensor]) -> None:
        t[lora_key(1, "down_proj", "B")][3, 1] = value

    path = make_lora(tmp_path / "a", edit=poison)
    assert refused(path, spec, limits).code == "non_finite_weights"


# --- prompt learning (rules ready, off by default) ---------------------------------------


def _prompt_adapter(path: Path, peft_type: str, shape: tuple[int, int], n: int) -> Path:
    path.mkdir()
    save_file({"prompt_embeddings": torch.zeros(shape)}, str(path / "adapter_model.safetensors"))
    config = {"peft_type": peft_type, "num_virtual_tokens": n, "num_transformer_submodules": 1}
    (path / "adapter_config.json").write_text(json.dumps(config))
    return path


def test_prompt_learning_types_need_enabling(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits
) -> None:
    path = _prompt_adapter(tmp_path / "p", "PROMPT_TUNING", (8, 96), 8)
    err = refused(path, spec, limits)
    assert err.code == "unsupported_peft_type" and "not enabled" in err.message


@pytest.mark.parametrize(
    "peft_type, width",
    [("PROMPT_TUNING", 96), ("P_TUNING", 96), ("PREFIX_TUNING", 2 * 2 * 2 * 16)],
)
def test_prompt_learning_shapes(
    tmp_path: Path, spec: BaseModelSpec, peft_type: str, width: int
) -> None:
    enabled = AdmissionLimits(peft_types=frozenset({peft_type}))
    ok = _prompt_adapter(tmp_path / "ok", peft_type, (8, width), 8)
    assert admit(ok, spec, enabled).num_virtual_tokens == 8
    wrong = _prompt_adapter(tmp_path / "wrong", peft_type, (8, width * 2), 8)
    assert refused(wrong, spec, enabled).code == "base_model_mismatch"
    short = _prompt_adapter(tmp_path / "short", peft_type, (7, width), 8)
    assert refused(short, spec, enabled).code == "malformed_weights"
