"""What an adapter must pass before the store accepts it for this base model.

:func:`admit` inspects a staged adapter directory and either returns an
:class:`AdmissionReport` or raises one :class:`~hotswap.adapters.errors.AdmissionError`
subclass naming the failed check. It never writes, and it never unpickles anything:
weights are read only through ``safetensors``, whose Rust parser bounds-checks the header
against the file size (a truncated file fails there, before any tensor is touched).

Checks run cheapest first: file names, config JSON, safetensors header (names, shapes,
dtypes), and only then tensor values (NaN/Inf).

PEFT types are pluggable: a :class:`PeftRule` per ``peft_type`` in :data:`RULES`. A type
is admitted only if it has a rule *and* the server enables it in
:attr:`AdmissionLimits.peft_types` (LoRA only by default, because the engine serves only
LoRA so far; the prompt-learning rules are ready for when it serves more).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError, safe_open

from .errors import (
    BadDtype,
    BaseModelMismatch,
    CorruptWeights,
    InvalidAdapterConfig,
    MalformedWeights,
    MissingWeights,
    NonFiniteWeights,
    PickleRefused,
    RankTooHigh,
    TooLarge,
    UnexpectedTensor,
    UnknownTargetModule,
    UnsafePath,
    UnsupportedFeature,
    UnsupportedPeftType,
    UnsupportedTargetModule,
)

logger = logging.getLogger(__name__)

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
#: Files a version keeps; anything else in the staged dir is dropped with a warning, so
#: the store holds only what the engine reads (plus the model card).
KEPT_FILES = frozenset({CONFIG_FILE, WEIGHTS_FILE, "README.md"})
#: Refused outright, wherever they appear: loading them would mean unpickling.
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
MAX_CONFIG_BYTES = 1 << 20

#: Base-model families whose decoder layers use the Llama projection names and shapes.
LLAMA_LAYOUT_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})

#: Modules the base model has but adapters may not target. Both would need LoRA on the
#: vocabulary-sized embedding / logits, which vLLM supports only narrowly, costs
#: vocab x rank per token on the CPU path, and on tied-embedding models (the default
#: SmolLM2) the two are one weight, so an adapter on either changes both. PEFT also saves
#: them as full copies (modules_to_save), which defeats small adapters.
UNSUPPORTED_MODULES = frozenset({"lm_head", "embed_tokens"})


# --- the base model ----------------------------------------------------------------------


@dataclass(frozen=True)
class ModuleShape:
    """A linear projection in every decoder layer: where it lives and its dimensions."""

    parent: str  # "self_attn" or "mlp"
    in_features: int
    out_features: int


@dataclass(frozen=True)
class BaseModelSpec:
    """The base model facts admission needs, taken from its HF ``config.json``."""

    model_id: str
    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any], model_id: str) -> BaseModelSpec:
        """Build from a parsed ``config.json``. Raises ValueError for unsupported layouts."""
        model_type = str(config.get("model_type", ""))
        if model_type not in LLAMA_LAYOUT_MODEL_TYPES:
            raise ValueError(
                f"base model type {model_type!r} is not supported for adapters "
                f"(supported: {sorted(LLAMA_LAYOUT_MODEL_TYPES)})"
            )
        try:
            hidden = int(config["hidden_size"])
            heads = int(config["num_attention_heads"])
            kv_heads = int(config.get("num_key_value_heads") or heads)
            head_dim = int(config.get("head_dim") or hidden // heads)
            return cls(
                model_id=model_id,
                model_type=model_type,
                hidden_size=hidden,
                intermediate_size=int(config["intermediate_size"]),
                num_layers=int(config["num_hidden_layers"]),
                num_attention_heads=heads,
                num_key_value_heads=kv_heads,
                head_dim=head_dim,
                vocab_size=int(config["vocab_size"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"base model config is missing or has a bad field: {exc}") from exc

    def modules(self) -> dict[str, ModuleShape]:
        """Adapter-targetable projections, keyed by PEFT module name."""
        h, i = self.hidden_size, self.intermediate_size
        q = self.num_attention_heads * self.head_dim
        kv = self.num_key_value_heads * self.head_dim
        return {
            "q_proj": ModuleShape("self_attn", h, q),
            "k_proj": ModuleShape("self_attn", h, kv),
            "v_proj": ModuleShape("self_attn", h, kv),
            "o_proj": ModuleShape("self_attn", q, h),
            "gate_proj": ModuleShape("mlp", h, i),
            "up_proj": ModuleShape("mlp", h, i),
            "down_proj": ModuleShape("mlp", i, h),
        }

    @property
    def fingerprint(self) -> str:
        """sha256 of the shape-relevant fields: equal fingerprints accept the same adapters."""
        fields = {
            "model_type": self.model_type,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_layers": self.num_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
        }
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


# --- limits and result -------------------------------------------------------------------


@dataclass(frozen=True)
class AdmissionLimits:
    """Server policy. ``max_lora_rank`` must equal the engine's ``max_lora_rank``."""

    max_lora_rank: int = 16
    #: Cap on the summed size of the adapter files (and on an uploaded archive's bytes).
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


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class RuleResult:
    """The part of the report a PEFT-type rule fills in."""

    rank: int | None = None
    alpha: float | None = None
    target_modules: tuple[str, ...] = ()
    num_virtual_tokens: int | None = None
    warnings: tuple[str, ...] = ()


class PeftRule(Protocol):
    """Checks config and tensor header (names, shapes) of one PEFT type against the base."""

    def check(
        self,
        config: Mapping[str, Any],
        tensors: Mapping[str, TensorInfo],
        spec: BaseModelSpec,
        limits: AdmissionLimits,
    ) -> RuleResult: ...


# --- entry point -------------------------------------------------------------------------


def admit(adapter_dir: Path, spec: BaseModelSpec, limits: AdmissionLimits) -> AdmissionReport:
    """Run every check on ``adapter_dir``; raise the first failure, else return the report."""
    kept, dropped = _select_files(adapter_dir, limits)
    warnings = [f"ignored file not used by the server: {p}" for p in dropped]

    config = _read_config(adapter_dir / CONFIG_FILE)
    peft_type = config.get("peft_type")
    rule = RULES.get(peft_type) if isinstance(peft_type, str) else None
    if rule is None or peft_type not in limits.peft_types:
        known = "is not enabled on this server" if rule is not None else "is not supported"
        raise UnsupportedPeftType(
            f"peft_type {peft_type!r} {known} (accepted: {sorted(limits.peft_types)})"
        )

    weights = adapter_dir / WEIGHTS_FILE
    tensors = _read_header(weights)
    for name, info in tensors.items():
        if info.dtype not in FLOAT_DTYPES:
            raise BadDtype(
                f"tensor {name} has dtype {info.dtype}; adapter weights must be one of "
                f"{sorted(FLOAT_DTYPES)}"
            )
    result = rule.check(config, tensors, spec, limits)
    _check_finite(weights)

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
    )


# --- files -------------------------------------------------------------------------------


def _select_files(root: Path, limits: AdmissionLimits) -> tuple[list[str], list[str]]:
    """Walk ``root`` (no symlinks followed); return (kept, dropped) relative paths."""
    kept: list[str] = []
    dropped: list[str] = []
    pickles: list[str] = []
    entries = 0
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in sorted(dirnames + filenames):
            path = Path(dirpath, entry)
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            entries += 1
            if entries > limits.max_files:
                raise TooLarge(f"adapter has more than {limits.max_files} files")
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePath(f"{rel} is not a regular file (symlink, device or fifo)")
            total += st.st_size
            if total > limits.max_total_bytes:
                raise TooLarge(f"adapter files exceed {limits.max_total_bytes} bytes")
            if Path(entry).suffix.lower() in PICKLE_SUFFIXES:
                pickles.append(rel)
            elif rel in KEPT_FILES:
                kept.append(rel)
            else:
                dropped.append(rel)
    if pickles:
        raise PickleRefused(
            f"pickle-format files are refused and never loaded: {', '.join(sorted(pickles))}; "
            f"save weights as {WEIGHTS_FILE} (PEFT: save_pretrained(safe_serialization=True)) "
            "and leave training artefacts such as training_args.bin out"
        )
    if CONFIG_FILE not in kept:
        raise InvalidAdapterConfig(f"{CONFIG_FILE} is missing")
    if WEIGHTS_FILE not in kept:
        raise MissingWeights(f"{WEIGHTS_FILE} is missing")
    return kept, dropped


def _read_config(path: Path) -> dict[str, Any]:
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise InvalidAdapterConfig(f"{CONFIG_FILE} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        config = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidAdapterConfig(f"{CONFIG_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise InvalidAdapterConfig(f"{CONFIG_FILE} must hold a JSON object")
    if not isinstance(config.get("peft_type"), str):
        raise InvalidAdapterConfig(f"{CONFIG_FILE} has no string field 'peft_type'")
    return config


def _read_header(path: Path) -> dict[str, TensorInfo]:
    try:
        with safe_open(str(path), framework="pt") as f:
            infos: dict[str, TensorInfo] = {}
            for name in f.keys():  # noqa: SIM118 - safe_open is not a Mapping
                sl = f.get_slice(name)
                infos[name] = TensorInfo(tuple(sl.get_shape()), sl.get_dtype())
            return infos
    except SafetensorError as exc:
        raise CorruptWeights(f"{WEIGHTS_FILE} is corrupt or truncated: {exc}") from exc


def _check_finite(path: Path) -> None:
    # One tensor at a time: adapter tensors are small, and the file was size-capped.
    with safe_open(str(path), framework="pt") as f:
        for name in f.keys():  # noqa: SIM118 - safe_open is not a Mapping
            if not bool(torch.isfinite(f.get_tensor(name)).all()):
                raise NonFiniteWeights(f"tensor {name} contains NaN or Inf")


def _loosely_same_model(declared: str, model_id: str) -> bool:
    """Compare last path components case-insensitively; containment counts as equal
    (``HuggingFaceTB/SmolLM2-135M-Instruct`` ~ ``/models/SmolLM2-135M-Instruct-v1``)."""
    a = declared.rstrip("/").rsplit("/", 1)[-1].lower()
    b = model_id.rstrip("/").rsplit("/", 1)[-1].lower()
    return a in b or b in a


# --- config helpers shared by the rules --------------------------------------------------


def _positive_int(config: Mapping[str, Any], key: str) -> int:
    value = config.get(key)
    # bool is an int subclass; "r": true is a broken config, not rank 1.
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidAdapterConfig(f"{CONFIG_FILE}: '{key}' must be a positive integer")
    return value


# --- LoRA --------------------------------------------------------------------------------

# PEFT saves ``base_model.model.model.layers.<i>.<parent>.<module>.lora_<A|B>.weight``;
# some exporters drop the ``base_model.model.`` prefix (vLLM accepts both).
_LORA_KEY = re.compile(
    r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(\w+)\.(\w+)\.lora_([AB])\.weight$"
)
_ANY_LORA_KEY = re.compile(r"(?:^|\.)(\w+)\.lora_(?:embedding_)?[AB](?:\.weight)?$")

#: Config options whose non-default value vLLM would ignore or apply wrongly.
_LORA_UNSUPPORTED_OPTIONS: dict[str, str] = {
    "use_dora": "DoRA",
    "modules_to_save": "modules_to_save (full copies of base modules)",
    "rank_pattern": "rank_pattern (per-module ranks; scaling would be computed wrongly)",
    "alpha_pattern": "alpha_pattern (per-module alphas; scaling would be computed wrongly)",
    "lora_bias": "LoRA bias",
    "fan_in_fan_out": "fan_in_fan_out (transposed Conv1D weights)",
    "layer_replication": "layer_replication",
    "target_parameters": "target_parameters",
    "trainable_token_indices": "trainable_token_indices",
    "alora_invocation_tokens": "activated LoRA (aLoRA)",
    "use_qalora": "QA-LoRA",
}


class LoraRule:
    """LoRA on the decoder projections (q/k/v/o, gate/up/down)."""

    def check(
        self,
        config: Mapping[str, Any],
        tensors: Mapping[str, TensorInfo],
        spec: BaseModelSpec,
        limits: AdmissionLimits,
    ) -> RuleResult:
        modules = spec.modules()
        rank = _positive_int(config, "r")
        alpha = config.get("lora_alpha")
        if not isinstance(alpha, int | float) or isinstance(alpha, bool):
            raise InvalidAdapterConfig(f"{CONFIG_FILE}: 'lora_alpha' must be a number")
        if rank > limits.max_lora_rank:
            raise RankTooHigh(
                f"LoRA rank {rank} exceeds this server's max_lora_rank {limits.max_lora_rank}"
            )
        for key, what in _LORA_UNSUPPORTED_OPTIONS.items():
            if config.get(key):
                raise UnsupportedFeature(f"{what} is not supported ({key} is set)")
        bias = config.get("bias", "none")
        if bias != "none":
            raise UnsupportedFeature(f"LoRA bias={bias!r} is not supported (use 'none')")
        self._check_target_names(config.get("target_modules"), modules)

        pairs: dict[tuple[int, str], dict[str, tuple[int, ...]]] = {}
        for name, info in tensors.items():
            layer, module, which = self._parse_key(name, modules)
            if layer >= spec.num_layers:
                raise BaseModelMismatch(
                    f"tensor {name} is for layer {layer}, but base model {spec.model_id} has "
                    f"{spec.num_layers} layers: the adapter was trained for another base model"
                )
            if len(info.shape) != 2:
                raise MalformedWeights(f"tensor {name} has shape {list(info.shape)}, expected 2-D")
            pairs.setdefault((layer, module), {})[which] = info.shape
        if not pairs:
            raise MissingWeights(f"{WEIGHTS_FILE} holds no LoRA tensors")

        for (layer, module), found in sorted(pairs.items()):
            where = f"model.layers.{layer}.{modules[module].parent}.{module}"
            if set(found) != {"A", "B"}:
                raise MalformedWeights(f"{where}: lora_A and lora_B must both be present")
            (r_a, in_f), (out_f, r_b) = found["A"], found["B"]
            if r_a != r_b:
                raise MalformedWeights(f"{where}: lora_A has rank {r_a} but lora_B has rank {r_b}")
            if r_a > limits.max_lora_rank:
                raise RankTooHigh(
                    f"{where}: rank {r_a} exceeds this server's max_lora_rank "
                    f"{limits.max_lora_rank}"
                )
            if r_a != rank:
                raise MalformedWeights(f"{where}: tensors have rank {r_a}, config says r={rank}")
            shape = modules[module]
            if (in_f, out_f) != (shape.in_features, shape.out_features):
                raise BaseModelMismatch(
                    f"{where}: adapter has in={in_f} out={out_f}, base model {spec.model_id} "
                    f"has in={shape.in_features} out={shape.out_features}: the adapter was "
                    "trained for another base model"
                )
        targets = tuple(sorted({module for _, module in pairs}))
        return RuleResult(rank=rank, alpha=float(alpha), target_modules=targets)

    @staticmethod
    def _check_target_names(targets: object, modules: Mapping[str, ModuleShape]) -> None:
        # A string is a regex (or "all-linear"); PEFT expands it when training, so the
        # tensor names are the truth and are checked below.
        if targets is None or isinstance(targets, str):
            return
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise InvalidAdapterConfig(
                f"{CONFIG_FILE}: 'target_modules' must be a list of strings or a string"
            )
        for target in targets:
            # PEFT >= 0.14 may save full module paths ("model.layers.0.self_attn.q_proj").
            _classify_module(target.rsplit(".", 1)[-1], modules)

    @staticmethod
    def _parse_key(name: str, modules: Mapping[str, ModuleShape]) -> tuple[int, str, str]:
        m = _LORA_KEY.fullmatch(name)
        if m is None:
            if "lora_magnitude_vector" in name:
                raise UnsupportedFeature(f"tensor {name}: DoRA is not supported")
            generic = _ANY_LORA_KEY.search(name)
            if generic is not None:
                _classify_module(generic.group(1), modules)
            if name.endswith(".bias") and ".lora_" in name:
                raise UnsupportedFeature(f"tensor {name}: LoRA bias is not supported")
            raise UnexpectedTensor(f"tensor {name} is not a LoRA weight of a decoder projection")
        layer, parent, module, which = int(m[1]), m[2], m[3], m[4]
        _classify_module(module, modules)
        if modules[module].parent != parent:
            raise UnknownTargetModule(
                f"tensor {name}: the base model has no module {parent}.{module}"
            )
        return layer, module, which


def _classify_module(module: str, modules: Mapping[str, ModuleShape]) -> None:
    if module in modules:
        return
    if module in UNSUPPORTED_MODULES:
        raise UnsupportedTargetModule(
            f"target module {module!r} is not supported: adapters may target {sorted(modules)}"
        )
    raise UnknownTargetModule(
        f"target module {module!r} does not exist in the base model (it has "
        f"{sorted(modules)}): the adapter was likely trained for another architecture"
    )


# --- prompt learning ---------------------------------------------------------------------


class _PromptLearningRule:
    """One ``prompt_embeddings`` tensor of ``[num_virtual_tokens, width]``."""

    def width(self, spec: BaseModelSpec) -> int:
        raise NotImplementedError

    def check(
        self,
        config: Mapping[str, Any],
        tensors: Mapping[str, TensorInfo],
        spec: BaseModelSpec,
        limits: AdmissionLimits,
    ) -> RuleResult:
        n = _positive_int(config, "num_virtual_tokens")
        if n > limits.max_virtual_tokens:
            raise UnsupportedFeature(
                f"num_virtual_tokens {n} exceeds this server's cap {limits.max_virtual_tokens}"
            )
        # 2 means encoder-decoder (seq2seq); the server runs decoder-only models.
        if config.get("num_transformer_submodules", 1) not in (1, None):
            raise UnsupportedFeature("num_transformer_submodules must be 1 (decoder-only)")
        extra = sorted(set(tensors) - {"prompt_embeddings"})
        if extra:
            raise UnexpectedTensor(f"unexpected tensors: {', '.join(extra)}")
        if "prompt_embeddings" not in tensors:
            raise MissingWeights(f"{WEIGHTS_FILE} has no 'prompt_embeddings' tensor")
        shape = tensors["prompt_embeddings"].shape
        width = self.width(spec)
        if len(shape) != 2 or shape[0] != n:
            raise MalformedWeights(
                f"prompt_embeddings has shape {list(shape)}, expected [{n}, {width}]"
            )
        if shape[1] != width:
            raise BaseModelMismatch(
                f"prompt_embeddings has width {shape[1]}, base model {spec.model_id} needs "
                f"{width}: the adapter was trained for another base model"
            )
        return RuleResult(num_virtual_tokens=n)


class PromptTuningRule(_PromptLearningRule):
    """PROMPT_TUNING and P_TUNING: PEFT saves both as the soft prompt ``[n, hidden]``
    (for P_TUNING, the prompt encoder's output)."""

    def width(self, spec: BaseModelSpec) -> int:
        return spec.hidden_size


class PrefixTuningRule(_PromptLearningRule):
    """PREFIX_TUNING: learned keys and values for every layer, ``[n, layers*2*kv*hd]``."""

    def width(self, spec: BaseModelSpec) -> int:
        return spec.num_layers * 2 * spec.num_key_value_heads * spec.head_dim


RULES: Mapping[str, PeftRule] = {
    "LORA": LoraRule(),
    "PROMPT_TUNING": PromptTuningRule(),
    "P_TUNING": PromptTuningRule(),
    "PREFIX_TUNING": PrefixTuningRule(),
}

__all__ = [
    "RULES",
    "AdmissionLimits",
    "AdmissionReport",
    "BaseModelSpec",
    "ModuleShape",
    "PeftRule",
    "admit",
]
