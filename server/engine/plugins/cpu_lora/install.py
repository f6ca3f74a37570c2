"""Installing the replacement into vLLM: patch / unpatch, and the gated plugin entry point."""

from __future__ import annotations

import logging
from typing import Any

from . import activation, layout, wrapper
from .ops import _OPS
from .wrapper import _METHODS, _update_metadata

# A child of vLLM's "vllm" logger: register() runs inside vLLM's engine and worker
# processes, where only that logger has a handler (a spawned worker never sees the
# serving process's logging setup), so this is how its one line gets printed.
logger = logging.getLogger("vllm.hotswap.cpu_lora")

#: The vLLM release whose CPU LoRA internals this package replaces.
SUPPORTED_VLLM_VERSION = "0.32.0"

# The six torch ops punica_cpu imports by name, and the wrapper methods we replace.
_OP_NAMES = (
    "bgmv_shrink",
    "bgmv_expand",
    "bgmv_expand_slice",
    "sgmv_shrink",
    "sgmv_expand",
    "sgmv_expand_slice",
)
_METHOD_NAMES = (
    "update_metadata",
    "add_shrink",
    "add_expand",
    "add_lora_embedding",
    "add_lora_linear",
    "add_lora_logits",
)
# What patch() replaced, so unpatch() can restore it (A/B benchmarks, tests): the op
# functions of punica_cpu, and the class's own methods (None = it inherited the method).
_originals: dict[str, Any] = {}


def _activate_adapter(self: Any, lora_id: int) -> bool:
    # LoRAModelManager.activate_adapter, recording the slot it writes (activation.py).
    stock = _originals["activate_adapter"]
    return activation.activate_adapter(stock, self, lora_id)


def _create_lora_manager(*args: Any, **kwargs: Any) -> Any:
    # vllm.lora.worker_manager's create_lora_manager, then the slots learnt at start.
    manager = _originals["create_lora_manager"](*args, **kwargs)
    layout.fuse_all(manager)
    activation.prime(manager)
    return manager


def is_patched() -> bool:
    """Whether PunicaWrapperCPU currently runs this package's implementation."""
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    return PunicaWrapperCPU.update_metadata is _update_metadata


def patch() -> None:
    """Install the replacement ops and methods (idempotent; no platform/version check)."""
    from vllm.lora import worker_manager
    from vllm.lora.model_manager import LoRAModelManager
    from vllm.lora.punica_wrapper import punica_cpu

    if is_patched():
        return
    wrapper._generation += 1
    _originals["activate_adapter"] = LoRAModelManager.__dict__["activate_adapter"]
    LoRAModelManager.activate_adapter = _activate_adapter  # type: ignore[method-assign]
    # The name worker_manager imported from model_manager: what both of its managers call.
    _originals["create_lora_manager"] = worker_manager.create_lora_manager  # type: ignore[attr-defined]
    worker_manager.create_lora_manager = _create_lora_manager  # type: ignore[attr-defined]
    cls = punica_cpu.PunicaWrapperCPU
    for name in _OP_NAMES:
        _originals[name] = getattr(punica_cpu, name)
        setattr(punica_cpu, name, _OPS[name])
    for name in _METHOD_NAMES:
        _originals[name] = cls.__dict__.get(name)
        setattr(cls, name, _METHODS[name])


def unpatch() -> None:
    """Restore vLLM's stock CPU LoRA ops (used to A/B the patch in one process)."""
    from vllm.lora import worker_manager
    from vllm.lora.model_manager import LoRAModelManager
    from vllm.lora.punica_wrapper import punica_cpu

    if not is_patched():
        return
    LoRAModelManager.activate_adapter = _originals["activate_adapter"]  # type: ignore[method-assign]
    worker_manager.create_lora_manager = _originals["create_lora_manager"]  # type: ignore[attr-defined]
    cls = punica_cpu.PunicaWrapperCPU
    for name in _OP_NAMES:
        setattr(punica_cpu, name, _originals[name])
    for name in _METHOD_NAMES:
        if _originals[name] is None:
            delattr(cls, name)  # inherited before: removing ours exposes the base's again
        else:
            setattr(cls, name, _originals[name])


def register() -> None:
    """vLLM general-plugin entry point: patch CPU LoRA on the exact supported release.

    Called by vLLM in the engine process and in every worker process; calling it again
    is harmless.
    """
    import vllm
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        logger.info("hotswap CPU LoRA plugin: not a CPU platform, leaving vLLM unchanged")
        return
    if vllm.__version__ != SUPPORTED_VLLM_VERSION:
        logger.warning(
            "hotswap CPU LoRA plugin: written for vLLM %s, found %s; not patching "
            "(stock CPU LoRA gives base requests an adapter in mixed batches)",
            SUPPORTED_VLLM_VERSION,
            vllm.__version__,
        )
        return
    if is_patched():
        return
    patch()
    logger.info(
        "hotswap CPU LoRA plugin: patched PunicaWrapperCPU for vLLM %s "
        "(packed multi-adapter matmuls; tokens without an adapter get none)",
        vllm.__version__,
    )
