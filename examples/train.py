"""Train a demo-task adapter of any PEFT family on CPU and save it in bf16.

Run from anywhere::

    python examples/train.py                                   # LoRA: extract-person
    python examples/train.py --method prefix                   # extract-person-prefix
    python examples/train.py --task route_ticket --method prompt   # route-ticket-prompt
    python examples/train.py --steps 60 --rank 8

``--task``: ``extract_person`` (JSON extraction) or ``route_ticket`` (classification);
see ``examples/tasks/``.

``--method``: ``lora`` (rank ``--rank`` on ``--target-modules``), ``prompt`` (prompt
tuning: ``--virtual-tokens`` soft tokens), ``ptuning`` (P-tuning: an MLP prompt encoder,
saved as its output) or ``prefix`` (prefix tuning: learned keys and values per layer).

Steps: score the base model on held-out sentences, train the adapter in float32 (CPU
has no fast fp16, and fp32 keeps the tiny run stable), score it, save it in bf16, then
reload the saved file on a bf16 base and score again, because that is the form the
server runs it in (the engine applies adapters in the model dtype).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import (
    LoraConfig,
    PeftConfig,
    PeftModel,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
    get_peft_model,
    get_peft_model_state_dict,
)
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from safetensors.torch import save_file
from tasks import NAMES, Task, load
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

# Written into adapter_config.json: the public id of the model the weights belong
# to, rather than the local cache dir we happened to train from.
BASE_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
ADAPTERS_DIR = Path(__file__).resolve().parent / "adapters"
#: Per method: PEFT type, adapter name suffix (after the task's), default learning rate.
#: Soft prompts and prefixes are a few thousand numbers that start far from anything
#: useful: they take rates ~10x LoRA's.
METHODS = {
    "lora": ("LORA", "", 2e-3),
    "prompt": ("PROMPT_TUNING", "-prompt", 3e-2),
    "ptuning": ("P_TUNING", "-ptuning", 3e-3),
    "prefix": ("PREFIX_TUNING", "-prefix", 1e-2),
}
IGNORE_INDEX = -100  # label value the causal-LM loss skips

console = Console()


@dataclass(frozen=True)
class TrainConfig:
    method: str
    steps: int
    batch_size: int
    lr: float
    rank: int
    alpha: int
    target_modules: tuple[str, ...]
    virtual_tokens: int
    seed: int

    def peft_config(self) -> PeftConfig:
        if self.method == "lora":
            return LoraConfig(
                r=self.rank,
                lora_alpha=self.alpha,
                lora_dropout=0.0,  # a few dozen steps on fresh data: nothing to regularise
                target_modules=list(self.target_modules),
                task_type="CAUSAL_LM",
            )
        if self.method == "prompt":
            return PromptTuningConfig(task_type="CAUSAL_LM",
                                      num_virtual_tokens=self.virtual_tokens)
        if self.method == "ptuning":
            return PromptEncoderConfig(task_type="CAUSAL_LM",
                                       num_virtual_tokens=self.virtual_tokens,
                                       encoder_hidden_size=256)
        return PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=self.virtual_tokens)

    def describe(self) -> str:
        if self.method == "lora":
            targets = ", ".join(self.target_modules)
            return f"LoRA rank {self.rank}, alpha {self.alpha}, on `{targets}`"
        kind = {"prompt": "Prompt tuning", "ptuning": "P-tuning (MLP prompt encoder, "
                "saved as its output)", "prefix": "Prefix tuning (keys and values per layer)"}
        return f"{kind[self.method]}, {self.virtual_tokens} virtual tokens"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=None,
                   help="HF-style base model dir (default: the bundled SmolLM2-135M-Instruct)")
    p.add_argument("--task", choices=NAMES, default="extract_person", help="demo task")
    p.add_argument("--method", choices=sorted(METHODS), default="lora", help="PEFT family")
    p.add_argument("--out", type=Path, default=None,
                   help="adapter output dir (default: examples/adapters/<task adapter>"
                        "[-<method>])")
    p.add_argument("--steps", type=int, default=40, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=None, help="default: the method's")
    p.add_argument("--rank", type=int, default=4, help="LoRA rank")
    p.add_argument("--virtual-tokens", type=int, default=20,
                   help="prompt, ptuning, prefix: virtual tokens")
    p.add_argument("--target-modules", default="q_proj,v_proj,o_proj",
                   help="comma-separated module names to adapt")
    p.add_argument("--eval-n", type=int, default=20, help="held-out sentences to score")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def resolve_model_dir(model_dir: Path | None) -> Path:
    if model_dir is not None:
        return model_dir
    # Imported lazily: only the default path needs the hotswap package installed.
    from hotswap.server.config import home_from_env
    from hotswap.server.model_prep import prepare_bundled_model

    return Path(prepare_bundled_model(home_from_env()))


def prompt_text(task: Task, tokenizer: PreTrainedTokenizerBase, example: Any) -> str:
    text = tokenizer.apply_chat_template(
        task.build_messages(example), tokenize=False, add_generation_prompt=True
    )
    assert isinstance(text, str)
    return text


def check_template(task: Task, tokenizer: PreTrainedTokenizerBase, example: Any) -> None:
    """Fail early if the chat template does not end an assistant turn with the EOS token.

    Training appends ``eos_token`` after the answer; that is only right if the
    template writes the same token at the end of a turn, and the same token is
    what generation (here and in vLLM) stops on.
    """
    messages = [*task.build_messages(example), {"role": "assistant", "content": example.answer}]
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    expected = prompt_text(task, tokenizer, example) + example.answer + str(tokenizer.eos_token)
    if not isinstance(full, str) or not full.startswith(expected):
        raise SystemExit(f"chat template does not end a turn with {tokenizer.eos_token!r}")


def encode(
    task: Task, tokenizer: PreTrainedTokenizerBase, example: Any
) -> tuple[list[int], list[int]]:
    """Token ids and labels for one training example; loss only on answer + EOS.

    Prompt and answer are tokenized separately, as at inference time: the server
    tokenizes the rendered prompt, and the model then emits the answer's own
    tokens, so training on the jointly tokenized string could teach merges across
    the boundary that generation never produces.
    """
    prompt_ids = tokenizer(prompt_text(task, tokenizer, example),
                           add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(example.answer, add_special_tokens=False)["input_ids"]
    answer_ids = [*answer_ids, tokenizer.eos_token_id]
    return [*prompt_ids, *answer_ids], [IGNORE_INDEX] * len(prompt_ids) + answer_ids


def collate(
    task: Task, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Any]
) -> dict[str, torch.Tensor]:
    encoded = [encode(task, tokenizer, ex) for ex in examples]
    width = max(len(ids) for ids, _ in encoded)
    pad = tokenizer.pad_token_id
    input_ids, labels, mask = [], [], []
    for ids, labs in encoded:
        gap = width - len(ids)  # right padding: positions stay 0..n for the real tokens
        input_ids.append(ids + [pad] * gap)
        labels.append(labs + [IGNORE_INDEX] * gap)
        mask.append([1] * len(ids) + [0] * gap)
    return {
        "input_ids": torch.tensor(input_ids),
        "labels": torch.tensor(labels),
        "attention_mask": torch.tensor(mask),
    }


@torch.inference_mode()
def generate(
    task: Task,
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Any],
    label: str,
    batch_size: int = 10,
) -> list[str]:
    """Greedy completions, decoded without special tokens."""
    model.eval()
    # Left padding so every row's prompt ends where generation starts.
    tokenizer.padding_side = "left"
    outputs: list[str] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task_id = progress.add_task(f"Generating ({label})", total=len(examples))
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            batch = tokenizer(
                [prompt_text(task, tokenizer, ex) for ex in chunk],
                add_special_tokens=False,
                padding=True,
                return_tensors="pt",
            )
            # nn.Module.__getattr__ hides `generate` from mypy on the union type.
            out = model.generate(  # type: ignore[operator]
                **batch,
                max_new_tokens=task.max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new_tokens = out[:, batch["input_ids"].shape[1] :]
            outputs += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            progress.advance(task_id, len(chunk))
    return outputs


def evaluate(
    task: Task,
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Any],
    label: str,
) -> tuple[int, list[str]]:
    outputs = generate(task, model, tokenizer, examples, label)
    correct = task.score(examples, outputs)
    console.print(f"[bold]{label}[/]: {correct}/{len(examples)} held-out exact matches")
    return correct, outputs


def train(
    task: Task,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    cfg: TrainConfig,
) -> float:
    """Run the optimizer loop; returns the last step's loss."""
    # Fresh sentences for every step: the run never sees the same batch twice.
    examples = task.make_examples(cfg.steps * cfg.batch_size, "train", cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    # Linear decay to zero: a high constant rate is what makes 20-40 steps enough,
    # decaying it lets the last steps settle instead of bouncing around the minimum.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1.0 - step / cfg.steps
    )
    tokenizer.padding_side = "right"
    model.train()
    loss_value = math.nan
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task_id = progress.add_task("Training", total=cfg.steps, loss=math.nan)
        for step in range(cfg.steps):
            start = step * cfg.batch_size
            batch = collate(task, tokenizer, examples[start : start + cfg.batch_size])
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = loss.item()
            progress.update(task_id, advance=1, loss=loss_value)
    model.eval()
    return loss_value


def save_bf16(model: PeftModel, out: Path) -> Path:
    """Write adapter_config.json and a bf16 adapter_model.safetensors.

    Not ``model.save_pretrained``: that keeps the fp32 training dtype (4x the
    bytes for no gain at serving time, where vLLM casts to the model dtype
    anyway) and writes a generic README.md over ours.
    """
    out.mkdir(parents=True, exist_ok=True)
    # Before inference_mode: for P-tuning, PEFT saves the prompt encoder's *output* only
    # while the config is still in training mode (in inference mode it would save the
    # encoder's raw input embedding). No embedding layers are adapted; "auto" would look
    # the base id up on the Hub.
    state = get_peft_model_state_dict(model, save_embedding_layers=False)
    config = model.peft_config["default"]
    config.base_model_name_or_path = BASE_MODEL_ID
    config.inference_mode = True
    config.save_pretrained(str(out))
    weights = {name: t.detach().to(torch.bfloat16).contiguous() for name, t in state.items()}
    path = out / "adapter_model.safetensors"
    save_file(weights, str(path), metadata={"format": "pt"})
    path.chmod(0o644)  # safetensors writes 0600; the adapter is meant to be shared
    return path


def adapter_name(task: Task, method: str) -> str:
    return task.adapter + METHODS[method][1]


def write_readme(
    task: Task, out: Path, cfg: TrainConfig, results: dict[str, int], eval_n: int,
    seconds: float, size: int, example: Any, base_answer: str, adapter_answer: str,
) -> None:
    """Adapter card with the numbers of the run that produced these weights."""
    peft_type = METHODS[cfg.method][0]
    name = adapter_name(task, cfg.method)
    base_row = f"{results['base_fp32']}/{eval_n} | {results['base_bf16']}/{eval_n}"
    adapter_row = f"{results['adapter_fp32']}/{eval_n} | {results['adapter_bf16']}/{eval_n}"
    text = f"""# {name}

{peft_type} adapter for `{BASE_MODEL_ID}` that {task.card}

Task, data and scorer: `examples/tasks/{task.name}.py`.

## Score (greedy, {eval_n} held-out examples)

| model               | fp32 | bf16 |
|---------------------|------|------|
| base model          | {base_row} |
| base + this adapter | {adapter_row} |

fp32: the in-memory adapter right after training. bf16: this saved file reloaded
on a bf16 base, the form the server runs it in by default.

## Example

User message:

```
{task.user_message(example)}
```

Base model:

```
{base_answer.strip()}
```

With this adapter:

```
{adapter_answer.strip()}
```

## Training

{cfg.describe()}; {cfg.steps} steps of batch
{cfg.batch_size}, AdamW lr {cfg.lr:g} with linear decay, seed {cfg.seed}, float32 on CPU
({seconds:.0f} s on a shared 2-core box). Loss only on the answer tokens and the
end-of-turn token, so generation stops after the answer. Weights saved in bf16
({size / 1024:.0f} KiB).

Retrain: `python examples/train.py --task {task.name} --method {cfg.method}` (see
`examples/README.md`).
"""
    (out / "README.md").write_text(text)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    task = load(args.task)
    default_lr = METHODS[args.method][2]
    out = args.out or ADAPTERS_DIR / adapter_name(task, args.method)
    cfg = TrainConfig(
        method=args.method,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr if args.lr is not None else default_lr,
        rank=args.rank,
        alpha=2 * args.rank,  # the usual 2r scaling; rank changes then need no lr retune
        target_modules=tuple(m.strip() for m in args.target_modules.split(",") if m.strip()),
        virtual_tokens=args.virtual_tokens,
        seed=args.seed,
    )
    torch.manual_seed(cfg.seed)
    model_dir = resolve_model_dir(args.model_dir)
    console.print(f"Base model: {model_dir}")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    heldout = task.make_examples(args.eval_n, "heldout", cfg.seed)
    check_template(task, tokenizer, heldout[0])
    results: dict[str, int] = {}

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    results["base_fp32"], base_outputs = evaluate(task, model, tokenizer, heldout, "base fp32")

    peft_model = get_peft_model(model, cfg.peft_config())
    trainable, total = peft_model.get_nb_trainable_parameters()
    console.print(f"Trainable parameters: {trainable:,} of {total:,}")
    started = time.perf_counter()
    final_loss = train(task, peft_model, tokenizer, cfg)
    seconds = time.perf_counter() - started
    console.print(f"Trained {cfg.steps} steps in {seconds:.1f} s, final loss {final_loss:.4f}")
    results["adapter_fp32"], _ = evaluate(task, peft_model, tokenizer, heldout, "adapter fp32")

    path = save_bf16(peft_model, out)
    size = path.stat().st_size
    console.print(f"Saved {path} ({size / 1024:.0f} KiB)")
    del peft_model, model

    # Re-score exactly what was written, in the server's default dtype. The adapter
    # is kept in bf16 (PEFT would upcast it to fp32 by default) to match vLLM.
    base16 = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    results["base_bf16"], _ = evaluate(task, base16, tokenizer, heldout, "base bf16")
    adapted16 = PeftModel.from_pretrained(base16, str(out), autocast_adapter_dtype=False)
    results["adapter_bf16"], adapter_outputs = evaluate(
        task, adapted16, tokenizer, heldout, "saved adapter bf16"
    )

    write_readme(task, out, cfg, results, len(heldout), seconds, size,
                 heldout[0], base_outputs[0], adapter_outputs[0])
    console.print_json(json.dumps({"task": task.name, "method": cfg.method,
                                   "trainable_parameters": trainable,
                                   "train_seconds": round(seconds, 1), "adapter_bytes": size,
                                   "heldout": len(heldout), **results}))


if __name__ == "__main__":
    main()
