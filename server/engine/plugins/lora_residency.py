"""Worker-side half of ``VllmEngine.adapter_residency``: which LoRA ids sit where.

vLLM keeps LoRA adapters in two LRU caches inside each worker's
``LoRAModelManager`` (``vllm/lora/model_manager.py``): ``max_cpu_loras`` registered
adapters (weights loaded in host memory), and among them ``max_loras`` active ones,
copied into the device slots a batch can use (``lora_index_to_id``). Requests
activate their adapter, pushing the least recently used one out of the slots (it
stays registered) or out of memory altogether.

The front end has ``AsyncLLM.list_loras()`` (registered ids) but nothing for the
slots, so ``VllmEngine`` installs this class with vLLM's ``worker_extension_cls``
(the documented way to add methods for ``collective_rpc``; vLLM mixes it into the
worker class) and calls the method by name: a callable would need
``VLLM_ALLOW_INSECURE_SERIALIZATION=1`` to reach an engine in another process.

This module is imported inside vLLM's worker processes; it imports nothing heavy.
"""

from __future__ import annotations

from typing import Any

#: The method name ``VllmEngine`` passes to ``collective_rpc``.
METHOD = "hotswap_lora_residency"


class LoraResidencyExtension:
    """Mixed into vLLM's worker class (``self`` is the worker)."""

    def hotswap_lora_residency(self) -> list[list[int]] | None:
        """``[active ids (in a device slot), registered ids (loaded, any slot or none)]``,
        or None if this worker has no LoRA manager where vLLM 0.32 keeps it.

        Reads two LRU caches and returns ids only: microseconds in the worker. Runs in
        the engine loop between two steps, so it sees the slots of the last step.
        """
        runner: Any = getattr(self, "model_runner", None)
        worker_manager: Any = getattr(runner, "lora_manager", None)
        # The worker manager keeps its model manager private; there is no accessor.
        manager: Any = getattr(worker_manager, "_adapter_manager", None)
        if manager is None:  # LoRA disabled, or vLLM internals moved
            return None
        active = [int(i) for i in manager.lora_index_to_id if i is not None]
        registered = [int(i) for i in manager.list_adapters()]
        return [active, registered]
