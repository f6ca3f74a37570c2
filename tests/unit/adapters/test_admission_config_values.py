"""adapter_config.json values: finite numbers in range, the right JSON types, bounded
nesting; each refusal an InvalidAdapterConfig naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from adapter_fixtures import MakeLora
from hotswap.adapters import errors
from hotswap.adapters.admission import AdmissionLimits, BaseModelSpec, admit
from safetensors.torch import save_file

NAN = float("nan")
INF = float("inf")


def refusal(path: Path, spec: BaseModelSpec, limits: AdmissionLimits) -> errors.AdmissionError:
    with pytest.raises(errors.AdmissionError) as info:
        admit(path, spec, limits)
    return info.value


def with_raw_value(path: Path, field: str, raw: str) -> Path:
    """Set ``field`` of the config to the JSON text ``raw`` (which json.dumps can't write)."""
    config = path / "adapter_config.json"
    text = json.dumps({**json.loads(config.read_text()), field: "@@"})
    config.write_text(text.replace('"@@"', raw))
    return path


@pytest.mark.parametrize(
    "field, value",
    [
        ("lora_alpha", NAN),
        ("lora_alpha", INF),
        ("lora_alpha", -INF),
        ("lora_alpha", 0),
        ("lora_alpha", -8),
        ("lora_alpha", 1e9),
        ("lora_alpha", "16"),
        ("lora_alpha", True),
        ("lora_alpha", None),
        ("r", "8"),
        ("r", True),
        ("r", 0),
        ("r", -4),
        ("r", 4.0),
        ("lora_dropout", -0.1),
        ("lora_dropout", 1.5),
        ("lora_dropout", "0.1"),
        ("lora_dropout", NAN),
        ("use_rslora", "yes"),
        ("use_rslora", 1),
        ("rank_pattern", []),
        ("rank_pattern", {"q_proj": 0}),
        ("rank_pattern", {"q_proj": "8"}),
        ("alpha_pattern", {"q_proj": -1.0}),
        ("alpha_pattern", {"q_proj": INF}),
        ("layers_to_transform", [0, 99]),
        ("layers_to_transform", -1),
        ("layers_to_transform", ["0"]),
    ],
)
def test_lora_value_out_of_range_or_mistyped_is_refused(
    tmp_path: Path,
    spec: BaseModelSpec,
    limits: AdmissionLimits,
    make_lora: MakeLora,
    field: str,
    value: Any,
) -> None:
    path = make_lora(tmp_path / "a", config={field: value})  # json.dumps writes NaN, Infinity
    err = refusal(path, spec, limits)
    assert err.code == "invalid_adapter_config"
    assert field in err.message or "finite" in err.message


@pytest.mark.parametrize(
    "raw, why",
    [
        ("1e999", "finite"),  # parses to inf
        ("-1e400", "finite"),
        ("1" * 5000, "not valid JSON"),  # over Python's 4300-digit int limit
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),  # RecursionError in json
        ("[" * 20 + "]" * 20, "deeper than"),
    ],
)
def test_unreadable_numbers_and_nesting_are_refused(
    tmp_path: Path,
    spec: BaseModelSpec,
    limits: AdmissionLimits,
    make_lora: MakeLora,
    raw: str,
    why: str,
) -> None:
    path = with_raw_value(make_lora(tmp_path / "a"), "lora_alpha", raw)
    err = refusal(path, spec, limits)
    assert err.code == "invalid_adapter_config" and why in err.message


def test_values_in_range_are_admitted(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    config = {
        "lora_alpha": 0.5,
        "lora_dropout": 0.0,
        "use_rslora": False,
        "rank_pattern": {},
        "alpha_pattern": None,
        "layers_to_transform": [0, 1],
        "loftq_config": {},
        "eva_config": {"rho": 2.0, "whiten": False, "nested": [[1, 2], [3]]},
    }
    report = admit(make_lora(tmp_path / "a", config=config), spec, limits)
    assert report.alpha == 0.5
    big = make_lora(tmp_path / "b", rank=8, config={"lora_alpha": 65536, "lora_dropout": 1})
    assert admit(big, spec, limits).alpha == 65536.0


def test_well_typed_pattern_is_still_unsupported(
    tmp_path: Path, spec: BaseModelSpec, limits: AdmissionLimits, make_lora: MakeLora
) -> None:
    path = make_lora(tmp_path / "a", config={"alpha_pattern": {"q_proj": 32}})
    assert refusal(path, spec, limits).code == "unsupported_feature"


def _prompt_adapter(path: Path, config: dict[str, Any]) -> Path:
    path.mkdir()
    save_file({"prompt_embeddings": torch.zeros(8, 96)}, str(path / "adapter_model.safetensors"))
    full = {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 8, **config}
    (path / "adapter_config.json").write_text(json.dumps(full))
    return path


@pytest.mark.parametrize(
    "config, code",
    [
        ({"num_virtual_tokens": 8.0}, "invalid_adapter_config"),
        ({"num_virtual_tokens": True}, "invalid_adapter_config"),
        ({"num_transformer_submodules": True}, "invalid_adapter_config"),  # True == 1
        ({"num_transformer_submodules": 2}, "unsupported_feature"),
        ({"token_dim": -96}, "invalid_adapter_config"),
        ({"num_layers": "2"}, "invalid_adapter_config"),
        ({"token_dim": 96, "num_layers": 2, "num_attention_heads": 6}, None),
    ],
)
def test_prompt_learning_values(
    tmp_path: Path, spec: BaseModelSpec, config: dict[str, Any], code: str | None
) -> None:
    enabled = AdmissionLimits(peft_types=frozenset({"PROMPT_TUNING"}))
    path = _prompt_adapter(tmp_path / "p", config)
    if code is None:
        assert admit(path, spec, enabled).num_virtual_tokens == 8
    else:
        assert refusal(path, spec, enabled).code == code
