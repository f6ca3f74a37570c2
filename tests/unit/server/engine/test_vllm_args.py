"""``hotswap serve`` flags reach vLLM's engine arguments (no engine is started)."""

from __future__ import annotations

from hotswap.server.cli import engine_options
from hotswap.server.config import Settings


def _args(**flags: object):  # type: ignore[no-untyped-def]
    from hotswap.server.engine.vllm_args import engine_args

    return engine_args(engine_options(Settings(**flags), "/models/m", "m"))


def test_tensor_parallel_size_reaches_vllm() -> None:
    assert _args().tensor_parallel_size == 1
    assert _args(tensor_parallel_size=4).tensor_parallel_size == 4


def test_adapter_slots_and_types_reach_vllm() -> None:
    args = _args(max_loras=3, max_cpu_loras=9, max_lora_rank=32, prefix_adapters=False)
    assert (args.enable_lora, args.max_loras, args.max_cpu_loras, args.max_lora_rank) == (
        True, 3, 9, 32)
    assert args.enable_prompt_embeds is True
    assert args.kv_transfer_config is None  # no prefix connector when prefix adapters are off
    assert _args().kv_transfer_config is not None
    assert (args.model, args.served_model_name) == ("/models/m", "m")


def test_cpu_core_reservation_leaves_small_machines_whole() -> None:
    from hotswap.server.engine.vllm_args import reserved_cores

    # One core per worker for vLLM's busy-polling engine core, never the second one vLLM
    # adds for a KV connector; none where a worker would be left one core.
    assert [reserved_cores(cores, 1) for cores in (1, 2, 3, 4, 16)] == [0, 0, 1, 1, 1]
    assert [reserved_cores(cores, 2) for cores in (4, 5, 8)] == [0, 2, 2]


def test_cpu_core_reservation_reaches_the_engine_unless_the_user_set_one() -> None:
    import os

    from hotswap.server.engine.vllm_args import (
        RESERVED_CORES_ENV,
        bound_cores,
        engine_env,
        reserved_cores,
    )

    # vLLM binds one logical CPU per physical core of a NUMA node: never more than the
    # CPUs this process may run on.
    assert 1 <= bound_cores(1) <= len(os.sched_getaffinity(0))
    options = engine_options(Settings(), "/models/m", "m")
    assert engine_env(options, environ={}) == {
        RESERVED_CORES_ENV: str(reserved_cores(bound_cores(1), 1))}
    assert engine_env(options, environ={RESERVED_CORES_ENV: "3"}) == {}
