"""PEFT reference for engine tests: build LoRA and prompt-learning adapters and
greedy-decode them with HF.

The engine must produce exactly what PEFT produces, token for token, so these helpers
run the plain transformers + PEFT stack in float32 and return token ids in the same
shape vLLM reports them (new tokens only; the EOS id is kept when generation stopped on
it, as vLLM's ``CompletionOutput.token_ids`` does).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import torch
from peft import (
    LoraConfig,
    PeftModel,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
    get_peft_model,
)
from transformers import AutoModelForCausalLM, PreTrainedModel

# A PEFT LoRA starts with B = 0 (a no-op). Random A and B with this std give a delta of
# roughly a third of the base projection's output on SmolLM2-135M at rank 8: greedy
# output clearly departs from the base model's yet stays varied text, not one repeated
# token. Tests assert both properties rather than trusting this comment.
DEFAULT_WEIGHT_STD = 0.05


@functools.cache
def _base_model(base_model_dir: str) -> PreTrainedModel:
    """The float32 base model, loaded once per process (it is used for every reference)."""
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    model.eval()
    return model


def _eos_ids(model: PreTrainedModel) -> set[int]:
    """Token ids that end generation, from the generation config (what vLLM reads too)."""
    eos = model.generation_config.eos_token_id
    if eos is None:
        return set()
    return {eos} if isinstance(eos, int) else set(eos)


def make_lora_adapter(
    base_model_dir: Path,
    out_dir: Path,
    *,
    rank: int,
    target_modules: list[str],
    seed: int,
    alpha: int | None = None,
    weight_std: float = DEFAULT_WEIGHT_STD,
) -> Path:
    """Save a PEFT LoRA with random, non-trivial A and B matrices to ``out_dir``.

    Both matrices are drawn from N(0, weight_std) with a generator seeded by ``seed``,
    in a fixed (sorted parameter name) order, so an adapter is reproducible from its
    arguments. ``alpha`` defaults to ``rank`` (scaling 1).
    """
    # A private copy: get_peft_model injects LoRA layers into the model it is given,
    # and the cached base must stay clean for peft_greedy.
    model = copy.deepcopy(_base_model(str(base_model_dir)))
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else rank,
        target_modules=target_modules,
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        lora_params = sorted(
            (name, param)
            for name, param in peft_model.named_parameters()
            if "lora_A" in name or "lora_B" in name
        )
        if not lora_params:
            raise ValueError(f"no LoRA parameters created for target_modules={target_modules}")
        for _, param in lora_params:
            param.copy_(torch.randn(param.shape, generator=generator) * weight_std)
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out_dir))
    return out_dir


def make_prompt_adapter(base_model_dir: Path, out_dir: Path, *, peft_type: str,
                        num_virtual_tokens: int, seed: int) -> Path:
    """Save a PEFT PROMPT_TUNING, P_TUNING or PREFIX_TUNING adapter with random,
    non-trivial weights.

    PREFIX_TUNING: keys and values drawn with unit spread (the scale of the base
    model's own keys and values). PROMPT_TUNING: a soft prompt drawn with the spread of
    the base model's own token embeddings (so the virtual tokens look like tokens to the
    model, yet like none in particular). P_TUNING: PEFT's MLP prompt encoder with its
    random init, re-drawn from ``seed``; PEFT saves the encoder's output as the soft
    prompt."""
    base = _base_model(str(base_model_dir))
    model = copy.deepcopy(base)
    config: PromptTuningConfig | PromptEncoderConfig | PrefixTuningConfig
    if peft_type == "PREFIX_TUNING":
        config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=num_virtual_tokens)
    elif peft_type == "PROMPT_TUNING":
        config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=num_virtual_tokens)
    elif peft_type == "P_TUNING":
        config = PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=num_virtual_tokens,
                                     encoder_hidden_size=128)
    else:
        raise ValueError(peft_type)
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        spread = float(base.get_input_embeddings().weight.std())
        for name, param in sorted(peft_model.named_parameters()):
            if "prompt_encoder" not in name:
                continue
            if peft_type == "PREFIX_TUNING":
                std = 1.0
            elif "embedding" in name:
                std = spread
            else:
                std = float(param.std()) or 0.05
            param.copy_(torch.randn(param.shape, generator=generator) * std)
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out_dir))
    return out_dir


def peft_greedy(
    base_model_dir: Path,
    adapter_dir: Path | None,
    prompts: list[list[int]],
    max_new_tokens: int,
) -> list[list[int]]:
    """Greedy-decode each prompt with float32 transformers (+ the PEFT adapter if given).

    Returns only the new token ids per prompt. Like vLLM, generation stops at the first
    EOS id and that id is included in the output.
    """
    base = _base_model(str(base_model_dir))
    model: torch.nn.Module
    if adapter_dir is None:
        model = base
    else:
        # PeftModel.from_pretrained wraps the modules of the model it is given in place;
        # a copy keeps the cached base free of adapters between calls.
        model = PeftModel.from_pretrained(copy.deepcopy(base), str(adapter_dir))
        model.eval()
    eos_ids = _eos_ids(base)
    pad_id = base.generation_config.pad_token_id
    outputs: list[list[int]] = []
    with torch.no_grad():
        # One prompt at a time: no padding, so no attention-mask numerics differ from
        # the unpadded sequences the engine computes.
        for prompt in prompts:
            input_ids = torch.tensor([prompt], dtype=torch.long)
            generated = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=sorted(eos_ids) or None,
                pad_token_id=pad_id,
            )
            new_ids: list[int] = generated[0, len(prompt) :].tolist()
            for position, token_id in enumerate(new_ids):
                if token_id in eos_ids:
                    new_ids = new_ids[: position + 1]
                    break
            outputs.append(new_ids)
    return outputs
