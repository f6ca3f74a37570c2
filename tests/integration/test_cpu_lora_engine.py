"""Real vLLM engine on CPU: LoRA and base requests mixed in one batch equal PEFT exactly.

The engine runs in its own process (vLLM's default), so the CPU LoRA fix is in effect
only through the ``vllm.general_plugins`` entry point, the way a deployment gets it.
All four adapter slots are filled before any test runs: with the stock ops a request
without an adapter then picks up the last slot's adapter, so every base request below
would differ from PEFT's base output if the plugin were not active. There are six
adapters for the four slots, so that one case also makes the engine evict adapters and
write others into their slots mid-run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.peft_ref import make_lora_adapter, peft_greedy
from transformers import AutoTokenizer

pytestmark = pytest.mark.engine

MAX_NEW_TOKENS = 16
ALL_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Four adapters with different ranks (padded to max_lora_rank inside vLLM), scalings
# and target modules (untargeted modules leave zero slots in vLLM's stacked weights).
ADAPTERS: dict[str, dict[str, Any]] = {
    "a": {"rank": 8, "target_modules": ALL_MODULES, "seed": 11},
    "b": {"rank": 16, "target_modules": ["q_proj", "v_proj"], "seed": 12, "weight_std": 0.08},
    "c": {"rank": 4, "target_modules": ["o_proj", "up_proj", "down_proj"], "seed": 13},
    "d": {"rank": 16, "target_modules": ALL_MODULES, "seed": 14, "alpha": 32, "weight_std": 0.04},
}
MAX_LORAS = 4
# Two more than the engine has slots, for "slot_turnover" only (PEFT references are made
# just for the prompts they are used with: each takes seconds).
EXTRA_ADAPTERS: dict[str, dict[str, Any]] = {
    "e": {"rank": 8, "target_modules": ["q_proj", "v_proj", "gate_proj"], "seed": 15},
    "f": {"rank": 4, "target_modules": ALL_MODULES, "seed": 16, "weight_std": 0.08},
}
QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about rain.",
    "Name three colors.",
    "What is 2+2?",
    "Give me a tip for learning to cook.",
]
# Chunked prefill: the long prompt (~600 tokens) needs several 256-token steps, and its
# chunks share those steps with other requests' decode tokens.
MAX_NUM_BATCHED_TOKENS = 256
LONG_PROMPT_TOKENS = 600

Key = tuple[str | None, int]  # (adapter name or None for base, prompt index)
# Every (adapter, prompt) pair some test sends; PEFT references are made for these.
CASES: dict[str, list[Key]] = {
    "mixed": [(None, 0), ("a", 1), (None, 2), ("b", 3)],
    "first_only": [("b", 0), (None, 1), (None, 2), (None, 3)],
    "all_slots": [("a", 3), ("b", 2), (None, 4), ("c", 1), ("d", 0)],
    "chunked": [("a", 5), (None, 0), ("d", 1), (None, 5)],
    # No base request, so every row of every step has an adapter, several at once.
    "adapters_only": [("a", 1), ("b", 2), ("d", 0), ("a", 4)],
    # Six adapters for four slots, no base request: the scheduler admits at most four
    # adapters per step, so the first steps run eight requests of a, e, b and f; c and d
    # wait until those finish, then are written into slots that held other adapters.
    "slot_turnover": [(name, i % 5) for i, name in enumerate("aebfcdaebfcd")],
}


def _long_question() -> str:
    facts = [
        f"Station {i} recorded {10 + i % 7} millimetres of rain and a high of "
        f"{15 + (i * 3) % 11} degrees on day {i}."
        for i in range(1, 200)
    ]
    return " ".join(facts) + " Which station was the wettest?"


@pytest.fixture(scope="module")
def prompts(base_model_dir: Path) -> list[list[int]]:
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    out: list[list[int]] = []
    for question in [*QUESTIONS, _long_question()]:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True
        )
        out.append(list(ids if isinstance(ids, list) else ids["input_ids"]))
    # Trim the long one to the intended size, keeping the assistant turn marker at the end.
    long_prompt = out[-1]
    out[-1] = long_prompt[: LONG_PROMPT_TOKENS - 8] + long_prompt[-8:]
    return out


@pytest.fixture(scope="module")
def adapter_dirs(base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cpu-lora-adapters")
    return {
        name: make_lora_adapter(base_model_dir, root / name, **spec)
        for name, spec in {**ADAPTERS, **EXTRA_ADAPTERS}.items()
    }


@pytest.fixture(scope="module")
def reference(
    base_model_dir: Path, adapter_dirs: dict[str, Path], prompts: list[list[int]]
) -> dict[Key, list[int]]:
    """PEFT greedy output for every (adapter, prompt) pair used, plus base on all prompts.

    Computed before the engine starts: the two never run at the same time.
    """
    keys = {key for case in CASES.values() for key in case}
    keys |= {(None, i) for i in range(len(QUESTIONS))}
    keys |= {(name, i) for name in ADAPTERS for i in range(len(QUESTIONS))}
    out: dict[Key, list[int]] = {}
    for adapter in [None, *ADAPTERS, *EXTRA_ADAPTERS]:
        indices = sorted(i for name, i in keys if name == adapter)
        adapter_dir = adapter_dirs[adapter] if adapter else None
        outputs = peft_greedy(
            base_model_dir, adapter_dir, [prompts[i] for i in indices], MAX_NEW_TOKENS
        )
        out.update({(adapter, i): ids for i, ids in zip(indices, outputs, strict=True)})
    return out


@pytest.fixture(scope="module")
def llm(
    base_model_dir: Path, adapter_dirs: dict[str, Path], reference: dict[Key, list[int]]
) -> Iterator[Any]:
    from vllm import LLM
    from vllm.lora.request import LoRARequest

    del reference  # requested only so that PEFT is done before the engine starts
    engine = LLM(
        model=str(base_model_dir),
        enable_lora=True,
        max_loras=MAX_LORAS,
        max_lora_rank=16,
        dtype="float32",
        gpu_memory_utilization=0.1,
        # An explicit KV size: with only the fraction, vLLM subtracts the worker's own
        # memory from it, which fails on machines with smaller NUMA nodes.
        kv_cache_memory_bytes=256 << 20,
        enforce_eager=True,
        max_model_len=1024,
        max_num_seqs=8,
        max_num_batched_tokens=MAX_NUM_BATCHED_TOKENS,
        seed=0,
    )
    # Fill all four adapter slots (the LRU manager activates on add) so that the stock
    # ops' -1 -> last-slot bug would show on every base request.
    for int_id, (name, path) in enumerate(adapter_dirs.items(), start=1):
        if name in ADAPTERS:
            assert engine.llm_engine.add_lora(LoRARequest(name, int_id, str(path)))
    yield engine
    engine.llm_engine.engine_core.shutdown()


def _run(
    llm: Any, adapter_dirs: dict[str, Path], prompts: list[list[int]], case: list[Key]
) -> list[list[int]]:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    int_ids = {name: i for i, name in enumerate(adapter_dirs, start=1)}
    requests = [
        LoRARequest(name, int_ids[name], str(adapter_dirs[name])) if name else None
        for name, _ in case
    ]
    outputs = llm.generate(
        [TokensPrompt(prompt_token_ids=prompts[i]) for _, i in case],
        SamplingParams(temperature=0.0, max_tokens=MAX_NEW_TOKENS),
        lora_request=requests,
        use_tqdm=False,
    )
    return [list(output.outputs[0].token_ids) for output in outputs]


def test_adapters_change_output_but_stay_text(reference: dict[Key, list[int]]) -> None:
    """Otherwise equality with PEFT below would prove nothing about the adapters."""
    for name in ADAPTERS:
        differing = [
            i for i in range(len(QUESTIONS)) if reference[(name, i)] != reference[(None, i)]
        ]
        assert len(differing) >= 3, f"adapter {name} barely changes the output"
        for i in range(len(QUESTIONS)):
            assert len(set(reference[(name, i)])) >= 4, f"adapter {name} degenerates: {i}"


def test_long_prompt_is_chunked(prompts: list[list[int]]) -> None:
    assert len(prompts[-1]) == LONG_PROMPT_TOKENS > 2 * MAX_NUM_BATCHED_TOKENS


@pytest.mark.parametrize("case", list(CASES))
def test_batch_matches_peft(
    case: str,
    llm: Any,
    adapter_dirs: dict[str, Path],
    prompts: list[list[int]],
    reference: dict[Key, list[int]],
) -> None:
    got = _run(llm, adapter_dirs, prompts, CASES[case])
    expected = [reference[key] for key in CASES[case]]
    for key, got_ids, want_ids in zip(CASES[case], got, expected, strict=True):
        assert got_ids == want_ids, f"{case}: request {key} differs from PEFT"


def test_slot_turnover_uses_more_adapters_than_slots(reference: dict[Key, list[int]]) -> None:
    """The case must keep using more adapters than slots, and the extra adapters must
    change their answers (else one served with the wrong weights could still pass)."""
    names = {name for name, _ in CASES["slot_turnover"]}
    assert None not in names
    assert len(names) > MAX_LORAS
    for name, i in CASES["slot_turnover"]:
        if name in EXTRA_ADAPTERS:
            assert reference[(name, i)] != reference[(None, i)], f"{name} is a no-op on {i}"
