"""What hotswap lets users tune of vLLM, and the engine arguments built from it.

Apart from ``vllm.py`` so that the mapping from flags to vLLM's arguments can be checked
without starting an engine (``tests/unit/server/engine/test_vllm_args.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vllm.config import KVTransferConfig
from vllm.engine.arg_utils import AsyncEngineArgs

from .plugins.lora_residency import LoraResidencyExtension
from .plugins.prefix_kv import HotswapPrefixConnector


@dataclass(frozen=True)
class VllmOptions:
    """What hotswap lets users tune of vLLM (see ``Settings`` for the meaning)."""

    model: str
    served_model_name: str
    dtype: str
    max_model_len: int | None
    memory_fraction: float
    max_loras: int
    max_cpu_loras: int | None
    max_lora_rank: int
    enforce_eager: bool = False
    max_num_batched_tokens: int | None = None
    #: GPUs the model is split across (vLLM's tensor parallelism).
    tensor_parallel_size: int = 1
    #: Prompt-tuning adapters (vLLM's prompt-embeddings input).
    prompt_adapters: bool = True
    #: Prefix-tuning adapters (a KV connector: plugins/prefix_kv.py).
    prefix_adapters: bool = True
    #: A Jinja chat template used instead of the model's (its text).
    chat_template: str | None = None
    #: vLLM's tool-call parser for the model's syntax (tool_choice "auto").
    tool_call_parser: str | None = None


def served_peft_types(*, prompt_adapters: bool, prefix_adapters: bool) -> frozenset[str]:
    """The PEFT types this engine serves (what admission may accept)."""
    return frozenset({"LORA"}
                     | ({"PROMPT_TUNING", "P_TUNING"} if prompt_adapters else set())
                     | ({"PREFIX_TUNING"} if prefix_adapters else set()))


def engine_args(options: VllmOptions) -> AsyncEngineArgs:
    """vLLM's engine arguments for ``options`` (a function, so a test can check them
    without starting an engine)."""
    return AsyncEngineArgs(
        model=options.model,
        served_model_name=options.served_model_name,
        dtype=options.dtype,  # type: ignore[arg-type]  # validated by Settings
        max_model_len=options.max_model_len,  # type: ignore[arg-type]  # None = model's
        **_memory_args(options.memory_fraction),
        enable_lora=True,
        max_loras=options.max_loras,
        max_cpu_loras=options.max_cpu_loras,
        max_lora_rank=options.max_lora_rank,  # type: ignore[arg-type]
        enforce_eager=options.enforce_eager,
        enable_prompt_embeds=options.prompt_adapters,
        kv_transfer_config=KVTransferConfig(
            kv_connector=HotswapPrefixConnector.__name__,
            kv_connector_module_path=HotswapPrefixConnector.__module__,
            kv_role="kv_both",
        ) if options.prefix_adapters else None,
        max_num_batched_tokens=options.max_num_batched_tokens,
        # Per-engine stats feed the vllm:* Prometheus series on /metrics.
        disable_log_stats=False,
        enable_log_requests=False,
        # Adds the worker method adapter_residency() calls (see plugins/lora_residency.py).
        worker_extension_cls=_qualname(LoraResidencyExtension),
        tensor_parallel_size=options.tensor_parallel_size,
    )


def _memory_args(fraction: float) -> dict[str, Any]:
    """Turn ``--memory-fraction`` into vLLM's memory arguments.

    On GPU it is vLLM's ``gpu_memory_utilization``. On CPU vLLM reads that same
    number as "this process (weights and all) may use fraction x node RAM" and
    gives the KV cache what is left, which fails at start whenever the weights
    exceed the share. We give the CPU KV cache an explicit byte budget instead:
    fraction x the NUMA node's RAM, as vLLM measures it.
    """
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return {"gpu_memory_utilization": fraction}
    from vllm.utils.cpu_resource_utils import get_memory_node_info

    total = get_memory_node_info(0).total_memory
    return {"kv_cache_memory_bytes": int(total * fraction)}


#: vLLM's CPU backend: cores kept free of the worker's OpenMP threads (read by the
#: engine process at start; a user's own value is left alone).
RESERVED_CORES_ENV = "VLLM_CPU_NUM_OF_RESERVED_CPU"


def reserved_cores(cores: int, ranks: int) -> int:
    """The cores hotswap has vLLM keep free of compute threads, for ``cores`` cores its
    workers could bind (:func:`bound_cores`) and ``ranks`` workers.

    vLLM reserves one core per worker for its engine-core process, which busy-polls,
    and one more per worker whenever a KV connector is configured, for NIXL's transfer
    threads. hotswap's prefix connector moves nothing between processes, so that
    second core would only idle: one per worker, as without a connector. Except where
    that leaves a worker at most one core: with 2 cores or fewer per worker, none.
    Measured on a 2-core machine, the worker on both cores (the engine core's wait
    yields its core) ran 1.1-1.4x the throughput of the worker on one (the run of
    2026-12-04 of "hotswap vs vLLM's OpenAI server", in BENCHMARKS.md or, once a newer
    run replaced it, bench/results/history.md: vllm+plugin+args against vllm+plugin,
    and the ablation in its Reading).
    """
    return 0 if cores <= 2 * ranks else ranks


def bound_cores(ranks: int) -> int:
    """The cores vLLM's CPU auto-binding spreads ``ranks`` workers over: the allowed CPUs
    of one NUMA node per worker, one logical CPU per physical core (every logical CPU
    on ARM and RISC-V), as vllm/utils/ompmultiprocessing.py counts them."""
    from vllm.platforms import CpuArchEnum, current_platform
    from vllm.utils import cpu_resource_utils as cpus

    nodes = set(cpus.get_visible_memory_node()[:ranks])
    allowed = [c for c in cpus.get_allowed_cpu_list() if c.numa_node in nodes]
    if current_platform.get_cpu_architecture() in (CpuArchEnum.ARM, CpuArchEnum.RISCV):
        return len(allowed)
    return len({(c.numa_node, c.physical_core) for c in allowed})


def engine_env(options: VllmOptions, environ: Mapping[str, str] = os.environ
               ) -> dict[str, str]:
    """Environment for the engine's processes, beyond what the server has: the CPU
    core reservation (:func:`reserved_cores`) unless the user set one."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu() or RESERVED_CORES_ENV in environ:
        return {}
    ranks = options.tensor_parallel_size
    return {RESERVED_CORES_ENV: str(reserved_cores(bound_cores(ranks), ranks))}


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
