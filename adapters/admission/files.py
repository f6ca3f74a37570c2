"""Reading a staged adapter directory: which files it keeps, its config, its tensors.

Nothing here unpickles: weights are read only through ``safetensors``, whose Rust parser
bounds-checks the header against the file size (a truncated file fails there, before any
tensor is touched).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from ..defaults import DEFAULTS_FILE
from ..errors import (
    CorruptWeights,
    InvalidAdapterConfig,
    MissingWeights,
    NonFiniteWeights,
    PickleRefused,
    TooLarge,
    UnsafePath,
)
from ..strict_json import load_bounded
from .limits import AdmissionLimits

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
CARD_FILE = "README.md"
#: Files a version keeps; anything else in the staged dir is dropped with a warning, so
#: the store holds only what the engine reads, the task defaults (``hotswap.json``,
#: :mod:`hotswap.adapters.defaults`) and the model card.
KEPT_FILES = frozenset({CONFIG_FILE, WEIGHTS_FILE, DEFAULTS_FILE, CARD_FILE})
#: Refused outright, wherever they appear: loading them would mean unpickling.
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
#: Bytes per value of each accepted (float) dtype; its keys are :data:`FLOAT_DTYPES`.
FLOAT_DTYPE_BYTES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}
FLOAT_DTYPES = frozenset(FLOAT_DTYPE_BYTES)
MAX_CONFIG_BYTES = 1 << 20
#: Only the weights may be large. A bigger model card is dropped with a warning, not
#: refused: it is for people only, and a training run's long card should not fail an
#: otherwise good adapter. A bigger config is refused (:func:`read_config`): it is needed.
MAX_CARD_BYTES = 1 << 20
#: Nesting of ``adapter_config.json``: PEFT's is 3 deep at most; deeper values would make
#: every recursive reader of the config (json, pydantic, logging) a risk.
MAX_CONFIG_DEPTH = 16


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the safetensors header describes it (``dtype``: ``"F16"``, ...)."""

    shape: tuple[int, ...]
    dtype: str


def select_files(root: Path, limits: AdmissionLimits) -> tuple[list[str], list[str]]:
    """Walk ``root`` (no symlinks followed); return the kept relative paths and a warning
    for each file dropped."""
    kept: list[str] = []
    warnings: list[str] = []
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
            elif rel == CARD_FILE and st.st_size > MAX_CARD_BYTES:
                warnings.append(
                    f"dropped {rel}: {st.st_size} bytes, over the {MAX_CARD_BYTES}-byte cap "
                    "for a model card"
                )
            elif rel in KEPT_FILES:
                kept.append(rel)
            else:
                warnings.append(f"ignored file not used by the server: {rel}")
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
    return kept, warnings


def read_config(path: Path) -> dict[str, Any]:
    """The parsed ``adapter_config.json``: a size- and depth-capped JSON object with only
    finite numbers and a ``peft_type``."""
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise InvalidAdapterConfig(f"{CONFIG_FILE} is larger than {MAX_CONFIG_BYTES} bytes")
    config = load_bounded(path.read_bytes(), name=CONFIG_FILE, max_depth=MAX_CONFIG_DEPTH,
                          error=InvalidAdapterConfig)
    if not isinstance(config, dict):
        raise InvalidAdapterConfig(f"{CONFIG_FILE} must hold a JSON object")
    if not isinstance(config.get("peft_type"), str):
        raise InvalidAdapterConfig(f"{CONFIG_FILE} has no string field 'peft_type'")
    return config


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Name, shape and dtype of every tensor in the weights file, without reading values."""
    try:
        with safe_open(str(path), framework="pt") as f:
            infos: dict[str, TensorInfo] = {}
            for name in f.keys():  # noqa: SIM118 - safe_open is not a Mapping
                sl = f.get_slice(name)
                infos[name] = TensorInfo(tuple(sl.get_shape()), sl.get_dtype())
            return infos
    except SafetensorError as exc:
        raise CorruptWeights(f"{WEIGHTS_FILE} is corrupt or truncated: {exc}") from exc


def check_finite(path: Path) -> None:
    """Raise :class:`NonFiniteWeights` if any tensor in the weights file holds NaN or Inf."""
    # One tensor at a time: adapter tensors are small, and the file was size-capped.
    with safe_open(str(path), framework="pt") as f:
        for name in f.keys():  # noqa: SIM118 - safe_open is not a Mapping
            if not bool(torch.isfinite(f.get_tensor(name)).all()):
                raise NonFiniteWeights(f"tensor {name} contains NaN or Inf")
