"""Prompt tuning and P-tuning on the frozen engine: the soft prompt goes in front of the
prompt's token embeddings, through vLLM's prompt-embeddings input.

PEFT's causal-LM prompt learning (``PeftModelForCausalLM``) computes
``cat(soft_prompt, embed_tokens(input_ids))`` and runs the model on it: the virtual
tokens come before the whole prompt, BOS (if the tokenizer adds one) and chat template
included, at positions ``0..n-1``. P-tuning saves the output of its prompt encoder as
``prompt_embeddings`` (PEFT evaluates the MLP/LSTM when it saves), so both types are one
``[num_virtual_tokens, hidden]`` tensor here.

vLLM's mixed embeddings input does the concatenation in the engine: ``prompt_token_ids``
are ``n`` placeholders and then the real ids, ``prompt_is_token_ids`` marks which
positions the engine embeds itself (with its own table, on its device and in its dtype,
scaling included) and which take our rows. So this process never holds the embedding
table; it keeps each soft prompt by engine id from load to unload, and a request only
builds one tensor. ``cache_salt`` keeps prefix-cache blocks apart per adapter version:
the same token ids after another soft prompt have other keys and values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from safetensors import safe_open

from .interface import AdapterLoadError, AdapterSpec

WEIGHTS_FILE = "adapter_model.safetensors"
#: Token id written at the soft prompt's positions (any valid id: the engine replaces
#: those positions' embeddings with the soft prompt's rows).
PLACEHOLDER_ID = 0


@dataclass(frozen=True)
class EmbedsInput:
    """What the engine takes for one prompt-tuned request."""

    embeds: torch.Tensor  # [n + len(ids), hidden]; rows n.. are unused (zeros)
    token_ids: list[int]  # n placeholders, then the prompt's ids
    is_token_ids: list[bool]  # False for the n soft rows
    cache_salt: str


def check_prefix_file(adapter: AdapterSpec) -> None:
    """A prefix adapter's tensor is there and has its ``n`` rows (admission checked the
    width against the base): a broken file fails the load, not a request in the engine."""
    try:
        with safe_open(str(adapter.path / WEIGHTS_FILE), framework="pt") as f:
            shape = f.get_slice("prompt_embeddings").get_shape()
    except (OSError, KeyError, ValueError) as exc:
        raise AdapterLoadError(f"adapter {adapter.name!r}: {exc}") from exc
    if len(shape) != 2 or shape[0] != adapter.num_virtual_tokens:
        raise AdapterLoadError(f"adapter {adapter.name!r}: prefix of shape {shape} for "
                               f"{adapter.num_virtual_tokens} virtual tokens")


class SoftPrompts:
    """Soft prompts by engine id."""

    def __init__(self, hidden_size: int, dtype: torch.dtype) -> None:
        self._hidden = hidden_size
        self._dtype = dtype
        self._prompts: dict[int, torch.Tensor] = {}

    def load(self, adapter: AdapterSpec) -> None:
        """Read the adapter's soft prompt (admission checked its shape against the base
        model; checked again: the engine must never take a wrong tensor). Blocking file
        IO: call it off the event loop."""
        try:
            with safe_open(str(adapter.path / WEIGHTS_FILE), framework="pt") as f:
                soft = f.get_tensor("prompt_embeddings")
        except (OSError, KeyError, ValueError) as exc:  # what safetensors raises
            raise AdapterLoadError(f"adapter {adapter.name!r}: {exc}") from exc
        if soft.ndim != 2 or soft.shape[1] != self._hidden:
            raise AdapterLoadError(f"adapter {adapter.name!r}: soft prompt of shape "
                                   f"{list(soft.shape)} for a hidden size of {self._hidden}")
        self._prompts[adapter.engine_id] = soft.to(self._dtype).contiguous()

    def unload(self, engine_id: int) -> None:
        self._prompts.pop(engine_id, None)

    def loaded(self) -> set[int]:
        return set(self._prompts)

    def input(self, adapter: AdapterSpec, token_ids: Sequence[int]) -> EmbedsInput:
        soft = self._prompts.get(adapter.engine_id)
        if soft is None:
            raise AdapterLoadError(f"adapter {adapter.name!r} is not loaded")
        n = soft.shape[0]
        embeds = torch.zeros(n + len(token_ids), self._hidden, dtype=self._dtype)
        embeds[:n] = soft
        return EmbedsInput(
            embeds=embeds,
            token_ids=[PLACEHOLDER_ID] * n + list(token_ids),
            is_token_ids=[False] * n + [True] * len(token_ids),
            cache_salt=f"hotswap-prompt-{adapter.engine_id}",
        )
