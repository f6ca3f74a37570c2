"""Prefix tuning on the frozen engine, through vLLM's v1 KV-connector interface.

PEFT's PREFIX_TUNING stores learned keys and values for every layer,
``prompt_embeddings`` of ``[n, layers * 2 * kv_heads * head_dim]``, and feeds them as
past K/V: the real tokens start at position ``n`` and attend to the ``n`` learned
positions, which are never rotated (vLLM caches keys after RoPE, so writing the learned
keys as they are matches).

How a request gets its prefix (the API side is ``VllmEngine.generate``):

- its prompt is ``n`` placeholder ids and then the real ids, with ``cache_salt`` naming
  the adapter version (prefix-cache blocks are never shared across versions), and
  ``kv_transfer_params`` = ``{"hotswap_prefix": {"id", "path", "n"}}``;
- scheduler side: :meth:`get_num_new_matched_tokens` tells the scheduler the first ``n``
  positions are computed (less what the prefix cache already holds for this salt), so
  they are never run through the model; :meth:`build_connector_meta` hands the worker
  the adapter, the positions and their cache blocks — for new requests and for requests
  resumed after preemption (their blocks were freed; the scheduler asks again, and the
  prefix is written again into the new blocks);
- worker side: :meth:`start_load_kv` writes each layer's learned keys and values into
  those slots with the attention backend's own cache-write op
  (``impl.do_kv_cache_update``: the CPU kernel here, ``reshape_and_cache_flash`` and
  kin on CUDA), so the cache layout of any backend is respected. Adapter tensors are
  read once per worker and kept (LRU) by engine id: an id names one immutable version.

A failure (unreadable file, wrong shape) marks the request's blocks as failed to load;
with vLLM's default ``kv_load_failure_policy="fail"`` that request ends with an error
and the engine runs on. Never a silently dropped prefix.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.attention.backend import AttentionMetadata
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.request import Request

log = logging.getLogger(__name__)

#: The key of ``kv_transfer_params`` this connector reads.
PARAMS_KEY = "hotswap_prefix"
WEIGHTS_FILE = "adapter_model.safetensors"
#: Bytes of prefix tensors a worker keeps (LRU; an 8-token prefix of the bundled model
#: is 0.4 MB in float32, a 1,024-token one of a 7B model ~130 MB). An evicted prefix is
#: read again from its (immutable) file on its next request.
WORKER_CACHE_BYTES = 1 << 30
_LAYER_INDEX = re.compile(r"\.layers\.(\d+)\.")


def prefix_params(engine_id: int, path: str, num_virtual_tokens: int) -> dict[str, Any]:
    """The ``kv_transfer_params`` of a request served with a prefix adapter."""
    return {PARAMS_KEY: {"id": engine_id, "path": path, "n": num_virtual_tokens}}


@dataclass(frozen=True)
class _Load:
    """Write positions ``start..n-1`` of adapter ``engine_id`` into ``block_ids``."""

    req_id: str
    engine_id: int
    path: str
    n: int
    start: int
    block_ids: list[int]


@dataclass
class PrefixMetadata(KVConnectorMetadata):
    loads: list[_Load] = field(default_factory=list)


@dataclass
class _Pending:
    params: dict[str, Any]
    start: int


class HotswapPrefixConnector(KVConnectorBase_V1):
    def __init__(self, vllm_config: VllmConfig, role: KVConnectorRole,
                 kv_cache_config: KVCacheConfig) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        self._block_size = vllm_config.cache_config.block_size
        self._dtype = vllm_config.model_config.dtype
        # Scheduler side: requests whose prefix is to be written in the next step.
        self._pending: dict[str, _Pending] = {}
        # Worker side.
        self._tensors: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._failed_blocks: set[int] = set()

    # --- scheduler side ------------------------------------------------------------------

    def get_num_new_matched_tokens(self, request: Request, num_computed_tokens: int
                                   ) -> tuple[int | None, bool]:
        prefix = _prefix_of(request)
        if prefix is None or num_computed_tokens >= prefix["n"]:
            return 0, False
        return prefix["n"] - num_computed_tokens, False

    def update_state_after_alloc(self, request: Request, blocks: KVCacheBlocks,
                                 num_external_tokens: int) -> None:
        prefix = _prefix_of(request)
        if prefix is None or num_external_tokens <= 0:
            return
        self._pending[request.request_id] = _Pending(prefix, prefix["n"] - num_external_tokens)

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> KVConnectorMetadata:
        meta = PrefixMetadata()
        for new in scheduler_output.scheduled_new_reqs:
            pending = self._pending.pop(new.req_id, None)
            if pending is not None:
                meta.loads.append(_load(new.req_id, pending, new.block_ids[0]))
        cached = scheduler_output.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            if req_id not in cached.resumed_req_ids:
                continue
            pending = self._pending.pop(req_id, None)
            block_ids = cached.new_block_ids[i]
            if pending is not None and block_ids is not None:
                # Resumed after preemption: new_block_ids are all of its blocks.
                meta.loads.append(_load(req_id, pending, block_ids[0]))
        if self._pending:  # allocated this step, so scheduled this step: never left over
            log.error("prefix K/V not written for %s", sorted(self._pending))
            self._pending.clear()
        return meta

    # --- worker side ---------------------------------------------------------------------

    def start_load_kv(self, forward_context: ForwardContext, **kwargs: Any) -> None:
        meta = self._get_connector_metadata()
        assert isinstance(meta, PrefixMetadata)
        for load in meta.loads:
            try:
                self._write(load, forward_context)
            except Exception:  # any failure fails this request, never the engine
                log.exception("prefix adapter %d: writing its K/V failed", load.engine_id)
                # Only the blocks this load was to write: earlier blocks may be prefix-
                # cache hits other running requests share, and vLLM fails every request
                # holding a reported block.
                self._failed_blocks.update(
                    load.block_ids[p // self._block_size] for p in range(load.start, load.n))

    def _write(self, load: _Load, forward_context: ForwardContext) -> None:
        kv = self._tensor(load)
        positions = torch.arange(load.start, load.n)
        blocks = torch.tensor(load.block_ids, dtype=torch.long)
        slots = blocks[positions // self._block_size] * self._block_size \
            + positions % self._block_size
        for name, layer in forward_context.no_compile_layers.items():
            cache = getattr(layer, "kv_cache", None)
            found = _LAYER_INDEX.search(name)
            if cache is None or found is None or not hasattr(layer, "impl"):
                continue
            index = int(found.group(1))
            heads = _local_heads(layer, kv.shape[2])
            key = kv[load.start:, 2 * index, heads].to(cache.device)
            value = kv[load.start:, 2 * index + 1, heads].to(cache.device)
            layer.impl.do_kv_cache_update(layer, key.contiguous(), value.contiguous(), cache,
                                          slots.to(cache.device))

    def _tensor(self, load: _Load) -> torch.Tensor:
        """``[n, layers * 2, kv_heads, head_dim]`` in the model's dtype, read once."""
        found = self._tensors.get(load.engine_id)
        if found is not None:
            self._tensors.move_to_end(load.engine_id)
            return found
        with safe_open(f"{load.path}/{WEIGHTS_FILE}", framework="pt") as f:
            flat = f.get_tensor("prompt_embeddings")
        model = self._vllm_config.model_config
        # All layers, not this pipeline stage's: layer names carry global indexes.
        layers = model.get_total_num_hidden_layers()
        kv_heads = model.get_total_num_kv_heads()
        head_dim = model.get_head_size()
        want = [load.n, layers * 2 * kv_heads * head_dim]
        if list(flat.shape) != want:
            raise ValueError(f"prompt_embeddings {list(flat.shape)}, expected {want}")
        tensor: torch.Tensor = flat.to(self._dtype).view(load.n, layers * 2, kv_heads, head_dim)
        self._tensors[load.engine_id] = tensor
        while len(self._tensors) > 1 and sum(
                t.numel() * t.element_size() for t in self._tensors.values()
        ) > WORKER_CACHE_BYTES:
            self._tensors.popitem(last=False)
        return tensor

    def get_block_ids_with_load_errors(self) -> set[int]:
        failed, self._failed_blocks = self._failed_blocks, set()
        return failed

    def wait_for_layer_load(self, layer_name: str) -> None:
        return  # written synchronously in start_load_kv

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor,
                      attn_metadata: AttentionMetadata, **kwargs: Any) -> None:
        return  # nothing is saved: prefixes only flow in

    def wait_for_save(self) -> None:
        return


def _prefix_of(request: Request) -> dict[str, Any] | None:
    params = request.kv_transfer_params or {}
    prefix = params.get(PARAMS_KEY)
    return prefix if isinstance(prefix, dict) else None


def _load(req_id: str, pending: _Pending, block_ids: list[int]) -> _Load:
    p = pending.params
    return _Load(req_id, int(p["id"]), str(p["path"]), int(p["n"]), pending.start,
                 list(block_ids))


def _local_heads(layer: Any, total: int) -> slice:
    """This worker's KV heads under tensor parallelism (all of them without)."""
    from vllm.distributed import (
        get_tensor_model_parallel_rank,
        get_tensor_model_parallel_world_size,
    )

    local = int(getattr(layer, "num_kv_heads", total))
    if local == total:
        return slice(0, total)
    world, rank = get_tensor_model_parallel_world_size(), get_tensor_model_parallel_rank()
    # Fewer KV heads than ranks: each head is replicated on world // total ranks.
    start = rank * local if total >= world else rank // (world // total)
    return slice(start, start + local)
