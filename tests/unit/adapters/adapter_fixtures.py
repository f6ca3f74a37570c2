"""Helpers for the adapter registry tests: the tiny Llama-shaped base config (shared with
the HTTP tests, from ``support.fakes``), the LoRA writer (``support.loras``) bound to a
base spec, and archives built in memory (well-formed, or hostile block by block).

A module with a unique name rather than ``conftest``: test modules import from it, and
``import conftest`` is ambiguous when several test folders have one."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import pytest
import torch
from hotswap.adapters import errors
from hotswap.adapters.admission import AdmissionLimits, BaseModelSpec
from hotswap.adapters.sources.upload import extract_archive
from support.fakes import TINY_LLAMA_CONFIG
from support.loras import lora_key, write_lora

__all__ = ["TINY_LLAMA_CONFIG", "MakeLora", "lora_key", "lora_writer"]

#: Two zero blocks: the end of a tar archive.
TAR_END = b"\0" * 1024

#: The bundled base model's shape fields (HuggingFaceTB/SmolLM2-135M-Instruct).
SMOLLM2_CONFIG: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "vocab_size": 49152,
}


class MakeLora(Protocol):
    def __call__(
        self,
        path: Path,
        *,
        rank: int = 4,
        modules: Iterable[str] = ...,
        layers: Iterable[int] = ...,
        dtype: torch.dtype = ...,
        config: Mapping[str, Any] | None = None,
        edit: Callable[[dict[str, torch.Tensor]], object] | None = None,
    ) -> Path: ...


def lora_writer(spec: BaseModelSpec) -> MakeLora:
    """:func:`support.loras.write_lora` for ``spec``."""
    return partial(write_lora, spec=spec)


# --- archives ----------------------------------------------------------------------------


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], compress: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if compress else "w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def tar_member(
    name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, (data if kind == tarfile.REGTYPE else None)


def tar_of_dir(src: Path, arcname: str = ".", compress: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if compress else "w") as tar:
        tar.add(src, arcname=arcname)
    return buf.getvalue()


def raw_member(name: str, kind: bytes, data: bytes = b"", *, size: int | None = None) -> bytes:
    """One tar member written block by block, whatever its type: a ustar header claiming
    ``size`` (default ``len(data)``), then ``data`` padded to whole blocks."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if size is None else size
    return info.tobuf(tarfile.USTAR_FORMAT) + data + b"\0" * (-len(data) % 512)


def zip_bytes(members: list[tuple[str, bytes, int | None]]) -> bytes:
    """(name, data, unix mode or None)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return buf.getvalue()


def zip_of_dir(src: Path) -> bytes:
    return zip_bytes([(p.name, p.read_bytes(), None) for p in sorted(src.iterdir())])


#: An adapter dir as each upload format.
ARCHIVE_FORMATS: dict[str, Callable[[Path], bytes]] = {
    "tar.gz": lambda d: tar_of_dir(d),
    "tar": lambda d: tar_of_dir(d, compress=False),
    "zip": zip_of_dir,
}


def extract(data: bytes, dest: Path, limits: AdmissionLimits | None = None) -> None:
    extract_archive(io.BytesIO(data), dest, limits or AdmissionLimits())


def refused(
    data: bytes, dest: Path, limits: AdmissionLimits | None = None
) -> errors.AdmissionError:
    """The error extracting ``data`` raises (the test fails if it raises nothing or
    anything that is not an AdmissionError)."""
    with pytest.raises(errors.AdmissionError) as info:
        extract(data, dest, limits)
    return info.value
